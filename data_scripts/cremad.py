"""CREMA-D for the MLB protocol: ``python -m data_scripts.cremad --help``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from data_scripts._common import EXIT_OK, EXIT_UNUSABLE, SPLITS_DIR, Spec, main
from data_scripts._download import DownloadError, fetch, resolve_pointers
from mmbal.data import cremad as ds

REPOS = ["https://github.com/CheyneyComputerScience/CREMA-D.git",
         "https://gitlab.com/cs-cooper-lab/crema-d-mirror.git"]
MEDIA_URLS = ["https://media.githubusercontent.com/media/CheyneyComputerScience/CREMA-D/master",
              "https://gitlab.com/cs-cooper-lab/crema-d-mirror/-/raw/master",
              "https://gitlab.com/cs-cooper-lab/crema-d-mirror/-/raw/main"]
MLB_FOLDS_URL = ("https://raw.githubusercontent.com/kkontras/MLB/68ad48d45fe001499e1506fa9e36a793ef0e5d84/"
                 "datasets/CREMAD/data_splits_VALV.pkl")
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
            (7,442), Git-LFS pointers left in place, truncated WAVs and unreadable videos. Every
            file left out is named; the list goes to <cache>/verify.csv.
  prepare   decode each clip into the cache: 3 frames at 1 fps (first frame of each second,
            topped up to 3 with seeded extra frames as MLB does), stored as uint8; audio
            resampled to 22,050 Hz, tiled to 3 s, log|STFT| (n_fft 512, hop 353, Hann,
            centred) = 257 x 188, stored as float16. The four clips the CREMA-D README calls
            faulty are left out. Speaker-independent folds (63/14/14 actors) come from
            data_scripts/splits/cremad_folds.json (--folds committed), from the same rule on
            the actors you have (--folds from-data), or from MLB's own fold file
            (--folds mlb, after fetch-mlb-folds).
  report    sizes, folds, clips left out and why.
  all       verify + prepare + report (add --download to fetch first).
  splits    regenerate data_scripts/splits/cremad_folds.json (--write) or check it.
  fetch-mlb-folds  download MLB's data_splits_VALV (5,820-clip subset) for --folds mlb.

Typical run (estimates: download 10-40 min, prepare 10-20 min on 8 cores, cache ~5 GB):
  python -m data_scripts.cremad all --download --raw ~/mmbal_data/cremad/raw --cache ~/mmbal_data/cremad/cache
Exit codes: 0 usable, 1 unusable, 2 missing folder or wrong layout, 3 download failed.
"""


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
    p.add_argument("--download-workers", type=int, default=8, help="parallel downloads")


def add_prepare_options(p) -> None:
    p.add_argument("--folds", choices=["committed", "from-data", "mlb"], default="committed",
                   help="committed: data_scripts/splits/cremad_folds.json; from-data: same rule on the actors "
                        "present; mlb: MLB's data_splits_VALV (run fetch-mlb-folds first)")
    p.add_argument("--mlb-folds-file", help="MLB fold file (default: <cache>/mlb_data_splits_VALV.json)")
    p.add_argument("--stft-pad", choices=["constant", "reflect"], default="constant",
                   help="STFT edge padding: constant = librosa >= 0.10 (default), reflect = librosa < 0.10")


def make_splits(args, scan):
    if args.folds == "mlb":
        path = args.mlb_folds_file or args.cache / "mlb_data_splits_VALV.json"
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found; run: python -m data_scripts.cremad fetch-mlb-folds --cache {args.cache}")
        vavl = json.loads(open(path).read())
        return lambda clips: ds.splits_from_mlb(clips, vavl)
    if args.folds == "from-data":
        folds, rule = ds.speaker_folds({c.group for c in scan.clips}), FOLDS_RULE.replace("91", "present")
    else:
        folds, rule = json.loads(FOLDS_FILE.read_text())["folds"], FOLDS_RULE
    return lambda clips: ds.splits_from_actor_folds(clips, folds, rule=rule)


def committed_folds_text() -> str:
    """The committed fold file: the rule, then one line per fold and part (small, diff-friendly)."""
    head = {"rule": FOLDS_RULE, "seed": ds.FOLD_SEED, "n_folds": ds.N_FOLDS,
            "actors": f"{ds.ACTORS[0]}-{ds.ACTORS[-1]}",
            "mlb_fold_of_seed": {str(k): v for k, v in ds.MLB_FOLD_OF_SEED.items()}}
    lines = [f' "{k}": {json.dumps(v)},' for k, v in head.items()]
    folds = ds.speaker_folds(ds.ACTORS)
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
        fetch(MLB_FOLDS_URL, dest, progress=not args.no_progress)
    except DownloadError as err:
        print(f"download failed: {err}", file=sys.stderr)
        return 3
    print(f"saved {dest} (MLB's repository has no licence: keep it for your own runs, do not redistribute)")
    return EXIT_OK


SPEC = Spec(name="cremad", title="CREMA-D", module=ds, description=DESCRIPTION, download=download,
            make_splits=make_splits, class_names=lambda scan: ds.CLASS_NAMES,
            add_prepare_options=add_prepare_options, add_download_options=add_download_options,
            config=lambda a: ds.default_config(frame_size=a.frame_size, pad_mode=a.stft_pad),
            extra_commands={"splits": ("regenerate (--write) or check data_scripts/splits/cremad_folds.json",
                                       lambda p: p.add_argument("--write", action="store_true"), cmd_splits),
                            "fetch-mlb-folds": ("download MLB's fold file for --folds mlb", lambda p: None, cmd_fetch_mlb)})

if __name__ == "__main__":
    sys.exit(main(SPEC))
