"""UCF101 (Soomro et al., 2012), audio + RGB, under the MLB protocol (paper §4.4): ``python -m data_scripts.ucf101 --help``.

Only clips with an audio track, in the classes that have such clips (51 on the full dataset);
official splits 1-3 with seeds 109 / 19 / 337; validation = 10 % of each class's training groups
(``gXX``), so train and val share no group; 4 frames at 1 fps (shorter clips are dropped, as MLB
does); the first 3 s of 16 kHz audio (channel 0) -> log-|STFT| 257 x 136.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_scripts._common import EXIT_OK, EXIT_UNUSABLE, SPLITS_DIR, Spec, main
from data_scripts._download import check_sha256, extract, fetch_pinned, has_pointers, lift_single_folder
from data_scripts.cache import Clip, LayoutError, ScanResult
from data_scripts.media import UCF101_AUDIO, MediaError, media_problem, probe, read_audio_track, read_frames_1fps, \
    resample, stft_shape, ucf101_spectrogram
from mmbal.data.real import UCF101_SPLIT_OF_SEED

N_AUDIO_CLASSES = 51
SPLIT_SEEDS = {split: seed for seed, split in UCF101_SPLIT_OF_SEED.items()}   # MLB: --fold k runs with this seed
VAL_FRACTION = 0.1
CLIP = re.compile(r"^v_(?P<cls>[A-Za-z]+)_g(?P<group>\d{2})_c(?P<clip>\d{2})$")

VIDEOS_URL = "https://www.crcv.ucf.edu/data/UCF101/UCF101.rar"
LISTS_URL = "https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip"
VIDEOS_SHA256 = None     # UCF101.rar: no checksum is published (crcv.ucf.edu); download prints the sha256 to compare
# the lists zip (113,943 bytes) as pinned by TensorFlow Datasets (tensorflow_datasets/url_checksums/ucf101.txt)
LISTS_SHA256 = "5c0d1a53b8ed364a2ac830a73f405e51bece7d98ce1254fd19ed4a36b224bd27"
VAL_FILE = SPLITS_DIR / "ucf101_val_groups.json"
TEST_GROUPS = {"1": range(1, 8), "2": range(8, 15), "3": range(15, 22)}   # official: g01-07, g08-14, g15-21
VAL_RULE = ("for split k and class index c (classInd.txt, 1-101): the training groups are g01-g25 minus "
            "the split's test groups; numpy default_rng([seed_k, c]).choice picks round(10%) = 2 of the "
            "18 without replacement; seed_k = 109, 19, 337 for k = 1, 2, 3 (MLB's seeds).")

DESCRIPTION = f"""UCF101 (Soomro et al. 2012; 13,320 clips, 101 classes) as MLB's audio + RGB subset.

Steps (each resumable; a second run does only what is missing):
  download  fetch UCF101.rar (~6.5 GB) and the official split lists zip from crcv.ucf.edu and
            unpack them into --raw (the .rar needs unrar, 7z, bsdtar or unar on PATH). Pass
            --archive / --lists-archive for local copies, --insecure if the server's TLS
            certificate has expired again. The lists zip is checked against the sha256
            TensorFlow Datasets pins; none is published for UCF101.rar: it is printed.
  verify    check <raw>/UCF-101/<Class>/v_*.avi and <raw>/ucfTrainTestlist (classInd.txt,
            trainlist0k.txt, testlist0k.txt), find every listed clip (case-insensitively:
            HandstandPushups), probe each for an audio track. The class list is determined
            from the data: the classes with audio-bearing clips (51 on the full dataset);
            clips without audio are left out, each named.
  prepare   per clip: 4 frames at 1 fps (first frame of each second); clips shorter than
            4 s are dropped, as MLB does; stored as uint8 RGB at 240 x 320; audio channel 0
            resampled to 16 kHz, first 3 s, log|STFT| (n_fft 512, hop 353) = 257 x 136, float16.
            Validation = 10 % of each class's training groups (gXX), so train and val share
            no group: data_scripts/splits/ucf101_val_groups.json (--splits committed) or the
            same rule on the lists you have (--splits from-data).
  report    sizes, split sizes, clips left out and why.
  all       verify + prepare + report (add --download to fetch first).
  splits    regenerate data_scripts/splits/ucf101_val_groups.json (--write) or check it.

Typical run (estimates: download 15-60 min, verify ~2 min, prepare 20-40 min on 8 cores, cache ~6 GB):
  python -m data_scripts.ucf101 all --download --raw ~/mmbal_data/ucf101/raw --cache ~/mmbal_data/ucf101/cache
Exit codes: 0 usable, 1 unusable, 2 missing folder, wrong layout or unwritable cache, 3 download
failed, 130 / 143 stopped by Ctrl-C / SIGTERM (rerun the same command to resume).
"""


def default_config(*, frame_size=(240, 320), **audio) -> dict:
    """Protocol parameters; ``frame_size`` (H, W) = UCF101's native 240 x 320."""
    return {"n_frames": 4, "frame_size": list(frame_size), "audio": {**UCF101_AUDIO, "pad_mode": "constant", **audio}}


def shapes(config: dict) -> tuple[tuple, tuple]:
    """(frames_shape, audio_shape) of one cache row."""
    return (config["n_frames"], *config["frame_size"], 3), stft_shape(config["audio"])


def _layout(raw: Path) -> tuple[Path, Path, list[str]]:
    if not raw.is_dir():
        raise LayoutError(f"UCF101 folder {raw} does not exist")
    videos, lists = raw / "UCF-101", raw / "ucfTrainTestlist"
    missing = [p.name + "/" for p in (videos, lists) if not p.is_dir()]
    if not missing and not (lists / "classInd.txt").exists():
        missing.append("ucfTrainTestlist/classInd.txt")
    if missing:
        nested = sorted(p.parent for p in raw.glob("*/UCF-101"))
        hint = f"; found UCF-101 inside {nested[0]} - pass that folder instead" if nested else ""
        raise LayoutError(f"{raw} is not a UCF101 folder: missing {', '.join(missing)} (expected "
                          f"UCF-101/<Class>/v_*.avi and ucfTrainTestlist/classInd.txt, trainlist0k.txt, testlist0k.txt){hint}")
    splits = [k for k in "123" if (lists / f"trainlist0{k}.txt").exists() and (lists / f"testlist0{k}.txt").exists()]
    if not splits:
        raise LayoutError(f"{lists} holds no trainlist0k.txt + testlist0k.txt pair (k = 1, 2, 3)")
    return videos, lists, splits


def read_class_index(path: Path) -> tuple[dict[str, int], dict[int, str]]:
    """classInd.txt (``1 ApplyEyeMakeup``) -> ({lower-case name: 1-based index}, {index: name})."""
    out, names = {}, {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise LayoutError(f"{path} line {n}: expected '<index> <ClassName>', got {line!r}")
            out[parts[1].lower()] = int(parts[0])
            names[int(parts[0])] = parts[1]
    return out, names


def scan(raw: str | Path, *, check_media: bool = True, progress: bool = False) -> ScanResult:
    """Official lists -> probe every clip for an audio track -> keep the audio-bearing classes."""
    raw = Path(raw)
    video_dir, list_dir, splits = _layout(raw)
    class_index, names = read_class_index(list_dir / "classInd.txt")
    on_disk = {p.relative_to(video_dir).as_posix().lower(): p for p in sorted(video_dir.glob("*/*.avi"))}
    excluded, lists, entries = [], {}, {}
    for k in splits:
        lists[k] = {}
        for part in ("train", "test"):
            ids = []
            for n, line in enumerate((list_dir / f"{part}list0{k}.txt").read_text().splitlines(), 1):
                if not line.strip():
                    continue
                rel = line.split()[0]
                stem = Path(rel).stem
                m, folder = CLIP.match(stem), rel.split("/")[0].lower()
                if m is None or folder not in class_index:
                    excluded.append({"clip": stem, "step": "layout",
                                     "reason": f"{part}list0{k}.txt line {n}: cannot parse {rel!r} (class or name)"})
                    continue
                path = on_disk.get(rel.lower())
                if path is None:
                    excluded.append({"clip": stem, "step": "verify",
                                     "reason": f"{part}list0{k}.txt line {n}: {video_dir / rel} is missing"})
                    continue
                entries[stem] = (path, class_index[folder], m["group"])
                ids.append(stem)
            lists[k][part] = ids
    audio_of, problems = {}, {}
    # the audio filter needs every header, so clips are probed even with check_media=False
    for stem in tqdm(sorted(entries), desc="UCF101: probing audio tracks", unit="clip", disable=not progress):
        path = entries[stem][0]
        problem = media_problem(path, kind="video")
        if problem:
            problems[stem] = problem
        else:
            audio_of[stem] = probe(path).has_audio
    kept = sorted({entries[s][1] for s, has in audio_of.items() if has})
    label_of = {idx: i for i, idx in enumerate(kept)}
    clips, notes = [], []
    for stem in sorted(entries):
        path, idx, group = entries[stem]
        if idx not in label_of:
            reason = "class has no clip with an audio track (MLB's 51-class audio subset)"
            excluded.append({"clip": stem, "step": "protocol", "reason": problems.get(stem, reason)})
        elif stem in audio_of and not audio_of[stem]:
            excluded.append({"clip": stem, "step": "protocol", "reason": "no audio track (MLB keeps audio-bearing clips only)"})
        else:
            name = names[idx]
            clips.append(Clip(stem, label_of[idx], name, f"{name}_g{group}",
                              {"video": str(path), "class_index": idx, "group": f"g{group}"}, problems.get(stem)))
    mixed = sorted(names[i] for i in kept if not all(audio_of.get(s, True) for s, e in entries.items() if e[1] == i))
    if mixed:
        notes.append(f"classes with clips both with and without audio: {', '.join(mixed)}")
    if len(entries) > 9000 and len(kept) != N_AUDIO_CLASSES:
        notes.append(f"{len(kept)} classes have audio; MLB's protocol expects {N_AUDIO_CLASSES}")
    counts = {"listed clips found": len(entries), "clips with audio": sum(audio_of.values()),
              "classes with audio": len(kept), "classes": len(class_index), "candidate clips": len(clips)}
    extra = {"lists": lists, "class_names": [names[i] for i in kept], "kept_class_index": kept}
    return ScanResult(clips, excluded, counts, notes, extra)


def process(clip: Clip, config: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """One clip -> frames (4, H, W, 3) uint8 RGB, log-spectrogram (257, 136), info."""
    a = config["audio"]
    fr = read_frames_1fps(clip.inputs["video"], n_frames=config["n_frames"], size=tuple(config["frame_size"]),
                          seed_key=clip.clip)
    if fr.n_one_fps < config["n_frames"]:
        raise MediaError(f"{clip.inputs['video']}: only {fr.n_one_fps} frames at 1 fps (shorter than "
                         f"{config['n_frames']} s); MLB drops such clips")
    track = read_audio_track(clip.inputs["video"], mix="first")           # MLB keeps channel 0
    if track is None:
        raise MediaError(f"{clip.inputs['video']}: no audio track")
    wave, sr = track
    x = resample(torch.from_numpy(wave), sr, a["sample_rate"])
    spec = ucf101_spectrogram(x, sample_rate=a["sample_rate"], seconds=a["seconds"], n_fft=a["n_fft"],
                              hop=a["hop"], pad_mode=a["pad_mode"])
    return fr.frames, spec.numpy(), {"n_one_fps": fr.n_one_fps, "audio_seconds": round(x.numel() / a["sample_rate"], 2)}


def val_groups(train_groups: dict[int, list[str]], *, seed: int) -> dict[int, list[str]]:
    """Per class: round(10 %) (at least 1) of its training groups, drawn with ``default_rng([seed, class])``."""
    out = {}
    for idx in sorted(train_groups):
        groups = sorted(set(train_groups[idx]))
        n_val = max(1, round(VAL_FRACTION * len(groups)))
        if len(groups) < 2:
            out[idx] = []
            continue
        pick = np.random.default_rng([seed, idx]).choice(len(groups), size=n_val, replace=False)
        out[idx] = sorted(groups[i] for i in pick)
    return out


def group_splits(clips: list[Clip], lists: dict, val: dict[str, dict[int, list[str]]]) -> dict:
    """Official train/test per split; the val groups of each class move from train to val."""
    have = {c.clip: c for c in clips}
    folds = {}
    for k, parts in lists.items():
        train, held = [], []
        for stem in parts["train"]:
            c = have.get(stem)
            if c is not None:
                (held if c.inputs["group"] in val[k].get(c.inputs["class_index"], []) else train).append(stem)
        folds[k] = {"train": sorted(train), "val": sorted(held), "test": sorted(s for s in parts["test"] if s in have)}
    return {"rule": "official UCF101 splits; val = 10 % of each class's training groups (seeded by the split's MLB seed)",
            "folds": folds, "val_groups": {k: {str(i): g for i, g in v.items()} for k, v in val.items()}}


def _archive(args, local: str | None, url: str, name: str, expected: str | None, pin: str) -> Path:
    """A local archive or a download, checked against its pinned sha256 either way."""
    if local:
        return check_sha256(Path(local), expected, pin=f"data_scripts.ucf101.{pin}")
    return fetch_pinned(url, args.raw / "_download" / name, expected, pin=f"data_scripts.ucf101.{pin}",
                        insecure=args.insecure, progress=not args.no_progress)


def download(args) -> None:
    raw: Path = args.raw
    if not (raw / "UCF-101").is_dir() or has_pointers(raw.glob("UCF-101/*/*.avi")):
        rar = _archive(args, args.archive, VIDEOS_URL, "UCF101.rar", VIDEOS_SHA256, "VIDEOS_SHA256")
        print(f"unpacking {rar} into {raw} (several minutes)")
        extract(rar, raw)
    if not (raw / "ucfTrainTestlist" / "classInd.txt").exists():
        z = _archive(args, args.lists_archive, LISTS_URL, "UCF101TrainTestSplits-RecognitionTask.zip",
                     LISTS_SHA256, "LISTS_SHA256")
        extract(z, raw)
        lift_single_folder(raw, "ucfTrainTestlist")
    print(f"UCF101 in {raw}")


def add_download_options(p) -> None:
    p.add_argument("--archive", help="local UCF101.rar instead of downloading it")
    p.add_argument("--lists-archive", help="local UCF101TrainTestSplits-RecognitionTask.zip")
    p.add_argument("--insecure", action="store_true", help="do not check the server's TLS certificate")


def add_prepare_options(p) -> None:
    p.add_argument("--splits", choices=["committed", "from-data"], default="committed",
                   help="validation groups: the committed file, or the same rule on the lists present")
    p.add_argument("--stft-pad", choices=["constant", "reflect"], default="constant",
                   help="STFT edge padding: constant = librosa >= 0.10 (default), reflect = librosa < 0.10")


def canonical_val_groups() -> dict[str, dict[int, list[str]]]:
    """The rule applied to the official layout: 101 classes x 25 groups, test groups per split."""
    out = {}
    for k, test in TEST_GROUPS.items():
        train = [f"g{g:02d}" for g in range(1, 26) if g not in test]
        out[k] = val_groups({c: train for c in range(1, 102)}, seed=SPLIT_SEEDS[k])
    return out


def val_file_text() -> str:
    lines = [f' "rule": {json.dumps(VAL_RULE)},', f' "seeds": {json.dumps(SPLIT_SEEDS)},', ' "splits": {']
    body = [f'  "{k}": ' + json.dumps({str(c): g for c, g in v.items()}) for k, v in canonical_val_groups().items()]
    return "{\n" + "\n".join(lines) + "\n" + ",\n".join(body) + "\n }\n}\n"


def splitter(args, found: ScanResult):
    """The splits function the ``--splits`` option asks for."""
    lists = found.extra["lists"]
    by_stem = {c.clip: c for c in found.clips}
    trained, tested = {k: {} for k in lists}, {k: {} for k in lists}
    for k, parts in lists.items():
        for part, groups in (("train", trained[k]), ("test", tested[k])):
            for stem in parts[part]:
                if stem in by_stem:
                    c = by_stem[stem]
                    groups.setdefault(c.inputs["class_index"], set()).add(c.inputs["group"])
    if args.splits == "from-data":
        val = {k: val_groups({c: sorted(g) for c, g in t.items()}, seed=SPLIT_SEEDS[k]) for k, t in trained.items()}
    else:
        committed = json.loads(VAL_FILE.read_text())["splits"]
        val = {k: {int(c): g for c, g in committed[k].items()} for k in lists}
        for k, t in trained.items():
            for c, groups in t.items():
                chosen = set(val[k].get(c, []))
                if chosen & tested[k].get(c, set()) or not chosen & groups:
                    raise ValueError(f"committed val groups {sorted(chosen)} of class {c}, split {k} do not fit "
                                     f"trainlist0{k}.txt (train groups {sorted(groups)}); use --splits from-data")
    return lambda clips: group_splits(clips, lists, val)


def cmd_splits(args) -> int:
    text = val_file_text()
    if args.write:
        VAL_FILE.write_text(text)
        print(f"wrote {VAL_FILE}")
        return EXIT_OK
    same = VAL_FILE.exists() and VAL_FILE.read_text() == text
    print(f"{VAL_FILE} {'matches' if same else 'DIFFERS FROM'} the rule")
    return EXIT_OK if same else EXIT_UNUSABLE


SPEC = Spec(name="ucf101", title="UCF101", description=DESCRIPTION, scan=scan, process=process, shapes=shapes,
            config=lambda a: default_config(frame_size=a.frame_size, pad_mode=a.stft_pad),
            make_splits=splitter, class_names=lambda found: found.extra["class_names"], download=download,
            add_prepare_options=add_prepare_options, add_download_options=add_download_options,
            extra_commands={"splits": ("regenerate (--write) or check data_scripts/splits/ucf101_val_groups.json",
                                       lambda p: p.add_argument("--write", action="store_true"), cmd_splits)})

if __name__ == "__main__":
    sys.exit(main(SPEC))
