"""CREMA-D (Cao et al., 2014) under the MLB protocol (paper §4.2): ``python -m data_scripts.cremad --help``.

6 emotions from the file name; 3 frames at 1 fps from ``VideoFlash/*.flv``; audio from
``AudioWAV/*.wav`` resampled to 22.05 kHz, tiled to 3 s, log-|STFT| (n_fft 512, hop 353) -> 257 x 188;
speaker-independent folds of 63 / 14 / 14 actors; folds 0, 1, 2 go with seeds 109, 19, 337.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_scripts._common import EXIT_OK, EXIT_UNUSABLE, SPLITS_DIR, Spec, at_least, main
from data_scripts._download import DownloadError, fetch_pinned, resolve_pointers
from data_scripts.cache import Clip, LayoutError, ScanResult
from data_scripts.cremad_features import add_arguments as add_feature_arguments, cmd_features
from data_scripts.media import CREMAD_AUDIO, MediaError, cremad_spectrogram, media_problem, read_frames_1fps, \
    read_wav, resample, stft_shape
from mmbal.data.real import CREMAD_CLASSES, CREMAD_FOLD_OF_SEED

EMOTIONS = {code: k for k, code in enumerate(("NEU", "HAP", "SAD", "FEA", "DIS", "ANG"))}  # CREMAD_CLASSES order
ACTORS = [str(a) for a in range(1001, 1092)]                              # the 91 actors
N_CLIPS = 7442
KNOWN_BAD = {  # the CREMA-D README lists these as faulty
    "1076_MTI_SAD_XX": "no audio signal (listed as faulty in the CREMA-D README)",
    "1076_MTI_NEU_XX": "listed as faulty in the CREMA-D README",
    "1064_TIE_SAD_XX": "listed as faulty in the CREMA-D README",
    "1064_IEO_DIS_MD": "listed as faulty in the CREMA-D README",
}
NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")
FOLD_SEED = 0            # numpy default_rng seed of the actor permutation behind the committed folds
N_FOLDS = 5

REPOS = ["https://github.com/CheyneyComputerScience/CREMA-D.git",
         "https://gitlab.com/cs-cooper-lab/crema-d-mirror.git"]
MEDIA_URLS = ["https://media.githubusercontent.com/media/CheyneyComputerScience/CREMA-D/master",
              "https://gitlab.com/cs-cooper-lab/crema-d-mirror/-/raw/master",
              "https://gitlab.com/cs-cooper-lab/crema-d-mirror/-/raw/main"]
MLB_FOLDS_URL = ("https://raw.githubusercontent.com/kkontras/MLB/68ad48d45fe001499e1506fa9e36a793ef0e5d84/"
                 "datasets/CREMAD/data_splits_VALV.pkl")
# sha256 of that file (727,685 bytes of JSON despite the .pkl name), computed from the repository's git objects
MLB_FOLDS_SHA256 = "ca30f311a8729acaa3a23d44b59a9ce47759aac81e03b096dbd0626fae639341"
FOLDS_FILE = SPLITS_DIR / "cremad_folds.json"
FOLDS_RULE = ("actor-disjoint folds: numpy default_rng(0).permutation of the 91 sorted actor ids (1001-1091), "
              "cut into 5 blocks of 14; fold k tests on block k, validates on block k+1 (mod 5), trains on "
              "the other 63 actors. MLB runs folds 0, 1, 2 with seeds 109, 19, 337.")

DESCRIPTION = f"""CREMA-D (Cao et al. 2014; 7,442 clips, 91 actors, 6 emotions) for the MLB protocol.

Steps (each resumable; a second run does only what is missing):
  download  clone the CREMA-D repository without media (Git-LFS pointers), then fetch every
            AudioWAV/*.wav and VideoFlash/*.flv from GitHub's LFS server, falling back to the
            GitLab mirror when GitHub's LFS quota is exhausted; each file is checked against the
            sha256 in its pointer. About 3.6 GB. Only runs when you ask for it.
  verify    check the layout (<raw>/AudioWAV, <raw>/VideoFlash), the file names, the count
            (7,442), Git-LFS pointers left in place, truncated WAVs, unreadable or truncated videos. Every
            file left out is named; the list goes to <cache>/verify.csv.
  prepare   decode each clip into the cache: 3 frames at 1 fps (first frame of each second,
            topped up to 3 with seeded extra frames as MLB does), stored as uint8; audio
            resampled to 22,050 Hz, tiled to 3 s, log|STFT| (n_fft 512, hop 353, Hann,
            centred) = 257 x 188, stored as float16. The four clips the CREMA-D README calls
            faulty are left out. Speaker-independent folds (63/14/14 actors) come from the MLB
            code's fold file (--folds mlb, the default and the paper presets' folds: 5,820
            clips; the file is fetched at prepare time, or given with --mlb-folds-file), or are
            regenerated - a deviation from the paper - from data_scripts/splits/cremad_folds.json
            (--folds committed, all 91 actors) or the same rule on the actors you have
            (--folds from-data).
  report    sizes, folds, clips left out and why.
  all       verify + prepare + report (add --download to fetch first).
  splits    regenerate data_scripts/splits/cremad_folds.json (--write) or check it.
  fetch-mlb-folds  download MLB's data_splits_VALV (5,820-clip subset) for --folds mlb ahead
            of prepare, checked against the sha256 of the file at the pinned commit.
  features  after prepare: wav2vec 2.0 audio features and face-crop emotion embeddings for the
            paper's Conformer encoders (features --help explains the step).

Typical run (estimates: download 10-40 min, prepare 10-20 min on 8 cores, cache ~5 GB):
  python -m data_scripts.cremad all --download --raw ~/mmbal_data/cremad/raw --cache ~/mmbal_data/cremad/cache
Exit codes: 0 usable, 1 unusable, 2 missing folder, wrong layout or unwritable cache, 3 download
failed, 130 / 143 stopped by Ctrl-C / SIGTERM (rerun the same command to resume).
"""


def default_config(*, frame_size=(240, 320), pad_mode: str = "constant", **audio) -> dict:
    """Protocol parameters; ``frame_size`` is the stored (H, W) of each frame (our choice, not MLB's)."""
    return {"n_frames": 3, "min_saved": 3, "frame_size": list(frame_size),
            "audio": {**CREMAD_AUDIO, "pad_mode": pad_mode, **audio}}


def shapes(config: dict) -> tuple[tuple, tuple]:
    """(frames_shape, audio_shape) of one cache row."""
    return (config["n_frames"], *config["frame_size"], 3), stft_shape(config["audio"])


def _layout(raw: Path) -> tuple[Path, Path]:
    if not raw.is_dir():
        raise LayoutError(f"CREMA-D folder {raw} does not exist")
    wav_dir, flv_dir = raw / "AudioWAV", raw / "VideoFlash"
    missing = [d.name for d in (wav_dir, flv_dir) if not d.is_dir()]
    if missing:
        hint = ""
        nested = sorted(p.parent for p in raw.glob("*/AudioWAV"))
        if nested:
            hint = f"; found AudioWAV inside {nested[0]} - pass that folder instead"
        elif any(raw.glob("*.wav")) or any(raw.glob("*.flv")):
            hint = "; the .wav/.flv files lie directly in it - move them into AudioWAV/ and VideoFlash/"
        raise LayoutError(f"{raw} is not a CREMA-D folder: missing {' and '.join(m + '/' for m in missing)}"
                          f" (expected {raw}/AudioWAV/*.wav and {raw}/VideoFlash/*.flv){hint}")
    return wav_dir, flv_dir


def scan(raw: str | Path, *, check_media: bool = True, progress: bool = False) -> ScanResult:
    """List the clips of a CREMA-D folder; every file left out is named with its reason."""
    raw = Path(raw)
    wav_dir, flv_dir = _layout(raw)
    wavs = {p.stem: p for p in sorted(wav_dir.glob("*.wav"))}
    flvs = {p.stem: p for p in sorted(flv_dir.glob("*.flv"))}
    excluded, clips = [], []
    for stem in sorted(set(wavs) | set(flvs)):
        m = NAME.match(stem)
        where = wavs.get(stem) or flvs.get(stem)
        if m is None or m["emotion"] not in EMOTIONS:
            excluded.append({"clip": stem, "step": "layout",
                             "reason": f"{where}: name does not follow <actor>_<sentence>_<emotion>_<level>"})
            continue
        if stem in KNOWN_BAD:
            excluded.append({"clip": stem, "step": "protocol", "reason": KNOWN_BAD[stem]})
            continue
        problem = None
        if stem not in wavs:
            problem = f"{wav_dir / stem}.wav is missing (its video exists)"
        elif stem not in flvs:
            problem = f"{flv_dir / stem}.flv is missing (its audio exists)"
        label = EMOTIONS[m["emotion"]]
        clips.append(Clip(stem, label, CREMAD_CLASSES[label], m["actor"],
                          {"wav": str(wav_dir / f"{stem}.wav"), "flv": str(flv_dir / f"{stem}.flv")}, problem))
    if check_media:
        for clip in tqdm(clips, desc="CREMA-D: checking files", unit="clip", disable=not progress):
            if clip.problem is None:
                clip.problem = (media_problem(clip.inputs["wav"], kind="wav")
                                or media_problem(clip.inputs["flv"], kind="video"))
    notes = []
    if len(clips) + len(excluded) != N_CLIPS:
        notes.append(f"found {len(clips) + len(excluded):,} clip names; the full CREMA-D release has {N_CLIPS:,}")
    counts = {"wav files": len(wavs), "flv files": len(flvs), "candidate clips": len(clips),
              "actors": len({c.group for c in clips})}
    return ScanResult(clips, excluded, counts, notes)


def process(clip: Clip, config: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """One clip -> frames (3, H, W, 3) uint8, log-spectrogram (257, 188), info."""
    a = config["audio"]
    wave, sr = read_wav(clip.inputs["wav"])                                  # (C, N)
    x = resample(torch.from_numpy(wave).mean(0), sr, a["sample_rate"])      # librosa.load: mono, then resample
    if float(x.abs().max()) < 1e-4:
        raise MediaError(f"{clip.inputs['wav']}: silent audio (peak below 1e-4)")
    spec = cremad_spectrogram(x, sample_rate=a["sample_rate"], seconds=a["seconds"], n_fft=a["n_fft"],
                              hop=a["hop"], pad_mode=a["pad_mode"])
    fr = read_frames_1fps(clip.inputs["flv"], n_frames=config["n_frames"], min_saved=config["min_saved"],
                          size=tuple(config["frame_size"]), seed_key=clip.clip)
    return fr.frames, spec.numpy(), {"n_one_fps": fr.n_one_fps}


def speaker_folds(actors, *, seed: int = FOLD_SEED, n_folds: int = N_FOLDS) -> dict[str, dict[str, list[str]]]:
    """Actor-disjoint folds: one seeded permutation cut into blocks of round(14/91 * n) actors.

    Fold k tests on block k, validates on block k+1 (mod n_folds) and trains on the rest, so with the
    91 CREMA-D actors every fold is 63 / 14 / 14 and the 5 test blocks are disjoint (like VAVL's folds).
    """
    actors = sorted(str(a) for a in actors)
    block = _block(len(actors))
    if n_folds * block > len(actors) or len(actors) - 2 * block < 1:
        raise ValueError(f"{len(actors)} actors are too few for {n_folds} folds of {block} test actors")
    perm = [actors[i] for i in np.random.default_rng(seed).permutation(len(actors))]
    blocks = [perm[k * block:(k + 1) * block] for k in range(n_folds)]
    folds = {}
    for k in range(n_folds):
        test, val = blocks[k], blocks[(k + 1) % n_folds]
        folds[str(k)] = {"train": sorted(set(actors) - set(test) - set(val)), "val": sorted(val), "test": sorted(test)}
    return folds


def _block(n_actors: int) -> int:
    return max(1, round(n_actors * 14 / 91))


def from_data_rule(actors) -> str:
    """The ``--folds from-data`` rule in words, with the numbers of the actors present."""
    actors, block = sorted(actors), _block(len(actors))
    return (f"actor-disjoint folds: numpy default_rng({FOLD_SEED}).permutation of the {len(actors)} sorted ids of "
            f"the actors with a usable clip ({', '.join(actors)}), cut into {N_FOLDS} blocks of {block}; fold k "
            f"tests on block k, validates on block k+1 (mod {N_FOLDS}), trains on the other "
            f"{len(actors) - 2 * block} actors. MLB runs folds 0, 1, 2 with seeds 109, 19, 337.")


def splits_from_actor_folds(clips: list[Clip], actor_folds: dict, *, rule: str) -> dict:
    """Clip-level splits from actor-level folds; an actor missing from the folds is an error."""
    known = {a for parts in actor_folds.values() for ids in parts.values() for a in ids}
    unknown = sorted({c.group for c in clips} - known)
    if unknown:
        raise ValueError(f"actors {', '.join(unknown)} are not in the fold file; pass --folds from-data")
    folds = {f: {part: sorted(c.clip for c in clips if c.group in set(ids)) for part, ids in parts.items()}
             for f, parts in actor_folds.items()}
    return {"rule": rule, "folds": folds, "actor_folds": actor_folds}


def splits_from_mlb(clips: list[Clip], vavl: dict) -> dict:
    """Clip-level splits from MLB's ``data_splits_VALV`` JSON (keys "1".."5" -> our folds "0".."4")."""
    have = {c.clip for c in clips}
    folds = {}
    for key, parts in sorted(vavl.items()):
        folds[str(int(key) - 1)] = {part: sorted(n.split(".wav")[0] for n in names if n.split(".wav")[0] in have)
                                    for part, names in parts.items() if part in ("train", "val", "test")}
    return {"rule": "MLB / VAVL speaker-independent folds (data_splits_VALV), fold k = key k+1", "folds": folds}


def download(args) -> None:
    raw = args.raw
    if not (raw / "AudioWAV").is_dir():
        if shutil.which("git") is None:
            raise DownloadError(f"git is not installed; clone {REPOS[0]} into {raw} yourself, then rerun download")
        env = {**os.environ, "GIT_LFS_SKIP_SMUDGE": "1"}                # pointers only; media come next
        for url in REPOS:
            shutil.rmtree(raw, ignore_errors=True)
            print(f"cloning {url} (without media) into {raw}")
            if subprocess.run(["git", "clone", "--depth", "1", url, str(raw)], env=env).returncode == 0:
                break
        else:
            raise DownloadError(f"could not clone any of {', '.join(REPOS)} (offline?)")
    files = [(p, f"{folder}/{p.name}") for folder, ext in (("AudioWAV", "wav"), ("VideoFlash", "flv"))
             for p in sorted((raw / folder).glob(f"*.{ext}"))]
    errors = resolve_pointers(files, args.media_url or MEDIA_URLS, workers=args.download_workers,
                              progress=not args.no_progress)
    if errors:
        for err in errors[: args.show]:
            print(f"  {err}", file=sys.stderr)
        raise DownloadError(f"{len(errors)} files are still Git-LFS pointers; rerun download later (quota?) or "
                            "use the release: https://github.com/CheyneyComputerScience/CREMA-D/releases")
    print(f"CREMA-D media complete in {raw}")


def add_download_options(p) -> None:
    p.add_argument("--media-url", action="append", help="base URL of the LFS media (repeatable; default: GitHub, then the GitLab mirror)")
    p.add_argument("--download-workers", type=at_least(1), default=8, help="parallel downloads")


def add_prepare_options(p) -> None:
    p.add_argument("--folds", choices=["mlb", "committed", "from-data"], default="mlb",
                   help="mlb (default): the MLB code's data_splits_VALV, the paper presets' folds (fetched at "
                        "prepare time unless --mlb-folds-file is given); regenerated, a deviation: committed = "
                        "data_scripts/splits/cremad_folds.json, from-data = the same rule on the actors present")
    p.add_argument("--mlb-folds-file", help="MLB fold file (default: <cache>/mlb_data_splits_VALV.json)")
    p.add_argument("--stft-pad", choices=["constant", "reflect"], default="constant",
                   help="STFT edge padding: constant = librosa >= 0.10 (default), reflect = librosa < 0.10")


def mlb_fold_file(args) -> Path:
    """The MLB fold file for ``--folds mlb``: ``--mlb-folds-file``, else ``<cache>/mlb_data_splits_VALV.json``,
    fetched from the pinned commit (and checked against its sha256) when absent."""
    if args.mlb_folds_file:
        if not os.path.exists(args.mlb_folds_file):
            raise FileNotFoundError(f"--mlb-folds-file {args.mlb_folds_file} not found")
        return Path(args.mlb_folds_file)
    try:
        return fetch_pinned(MLB_FOLDS_URL, Path(args.cache) / "mlb_data_splits_VALV.json", MLB_FOLDS_SHA256,
                            pin="data_scripts.cremad.MLB_FOLDS_SHA256", progress=not args.no_progress)
    except DownloadError as err:
        raise FileNotFoundError(f"--folds mlb needs the MLB code's fold file and fetching it failed ({err}). "
                                f"Download {MLB_FOLDS_URL} on a connected machine and pass --mlb-folds-file FILE, "
                                "or prepare the regenerated folds (--folds committed, a deviation)") from None


def splitter(args, found: ScanResult):
    """The splits function the ``--folds`` option asks for."""
    if args.folds == "mlb":
        vavl = json.loads(Path(mlb_fold_file(args)).read_text())
        return lambda clips: splits_from_mlb(clips, vavl)
    if args.folds == "from-data":                       # actors with a clip that prepared fine, only
        speaker_folds({c.group for c in found.usable()})   # too few actors: fail before decoding
        return lambda clips: splits_from_actor_folds(clips, speaker_folds({c.group for c in clips}),
                                                     rule=from_data_rule({c.group for c in clips}))
    folds = json.loads(FOLDS_FILE.read_text())["folds"]
    usable = found.usable()
    empty = [f"fold {f} {p}" for f, parts in splits_from_actor_folds(usable, folds, rule="")["folds"].items()
             for p, ids in parts.items() if not ids]
    if empty:                                           # checked before decoding, not after
        raise ValueError(f"the committed folds (91 actors) leave {', '.join(empty)} empty with the "
                         f"{len({c.group for c in usable})} actors present; on a partial dataset pass "
                         "--folds from-data")
    return lambda clips: splits_from_actor_folds(clips, folds, rule=FOLDS_RULE)


def committed_folds_text() -> str:
    """The committed fold file: the rule, then one line per fold and part (small, diff-friendly)."""
    head = {"rule": FOLDS_RULE, "seed": FOLD_SEED, "n_folds": N_FOLDS,
            "actors": f"{ACTORS[0]}-{ACTORS[-1]}",
            "mlb_fold_of_seed": {str(k): v for k, v in CREMAD_FOLD_OF_SEED.items()}}
    lines = [f' "{k}": {json.dumps(v)},' for k, v in head.items()]
    folds = speaker_folds(ACTORS)
    body = [f'  "{f}": {{' + ", ".join(f'"{p}": {json.dumps(ids)}' for p, ids in parts.items()) + "}"
            for f, parts in folds.items()]
    return "{\n" + "\n".join(lines) + '\n "folds": {\n' + ",\n".join(body) + "\n }\n}\n"


def cmd_splits(args) -> int:
    text = committed_folds_text()
    if args.write:
        FOLDS_FILE.parent.mkdir(parents=True, exist_ok=True)
        FOLDS_FILE.write_text(text)
        print(f"wrote {FOLDS_FILE}")
        return EXIT_OK
    same = FOLDS_FILE.exists() and FOLDS_FILE.read_text() == text
    print(f"{FOLDS_FILE} {'matches' if same else 'DIFFERS FROM'} the rule")
    return EXIT_OK if same else EXIT_UNUSABLE


def cmd_fetch_mlb(args) -> int:
    dest = args.cache / "mlb_data_splits_VALV.json"
    try:
        fetch_pinned(MLB_FOLDS_URL, dest, MLB_FOLDS_SHA256, pin="data_scripts.cremad.MLB_FOLDS_SHA256",
                     progress=not args.no_progress)
    except DownloadError as err:
        print(f"download failed: {err}", file=sys.stderr)
        return 3
    print(f"saved {dest} (MLB's repository has no licence: keep it for your own runs, do not redistribute)")
    return EXIT_OK


SPEC = Spec(name="cremad", title="CREMA-D", description=DESCRIPTION, scan=scan, process=process, shapes=shapes,
            config=lambda a: default_config(frame_size=a.frame_size, pad_mode=a.stft_pad),
            make_splits=splitter, class_names=lambda _: CREMAD_CLASSES, download=download,
            add_prepare_options=add_prepare_options, add_download_options=add_download_options,
            extra_commands={"splits": ("regenerate (--write) or check data_scripts/splits/cremad_folds.json",
                                       lambda p: p.add_argument("--write", action="store_true"), cmd_splits),
                            "fetch-mlb-folds": ("download MLB's fold file for --folds mlb", lambda p: None, cmd_fetch_mlb),
                            "features": ("wav2vec 2.0 audio and face-emotion features for the Conformer encoders "
                                         "(after prepare; GPU when present)", add_feature_arguments, cmd_features)})

if __name__ == "__main__":
    sys.exit(main(SPEC))
