"""UCF101 (audio + RGB) for the MLB protocol: ``python -m data_scripts.ucf101 --help``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from data_scripts._common import EXIT_OK, EXIT_UNUSABLE, SPLITS_DIR, Spec, main
from data_scripts._download import extract, fetch, lift_single_folder
from mmbal.data import ucf101 as ds

VIDEOS_URL = "https://www.crcv.ucf.edu/data/UCF101/UCF101.rar"
LISTS_URL = "https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip"
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
            certificate has expired again.
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
Exit codes: 0 usable, 1 unusable, 2 missing folder or wrong layout, 3 download failed.
"""


def download(args) -> None:
    raw: Path = args.raw
    if not (raw / "UCF-101").is_dir():
        rar = Path(args.archive) if args.archive else fetch(VIDEOS_URL, raw / "_download" / "UCF101.rar",
                                                           insecure=args.insecure, progress=not args.no_progress)
        print(f"unpacking {rar} into {raw} (several minutes)")
        extract(rar, raw)
    if not (raw / "ucfTrainTestlist" / "classInd.txt").exists():
        z = Path(args.lists_archive) if args.lists_archive else fetch(
            LISTS_URL, raw / "_download" / "UCF101TrainTestSplits-RecognitionTask.zip", insecure=args.insecure,
            progress=not args.no_progress)
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
        out[k] = ds.val_groups({c: train for c in range(1, 102)}, seed=ds.SPLIT_SEEDS[k])
    return out


def val_file_text() -> str:
    lines = [f' "rule": {json.dumps(VAL_RULE)},', f' "seeds": {json.dumps(ds.SPLIT_SEEDS)},', ' "splits": {']
    body = [f'  "{k}": ' + json.dumps({str(c): g for c, g in v.items()}) for k, v in canonical_val_groups().items()]
    return "{\n" + "\n".join(lines) + "\n" + ",\n".join(body) + "\n }\n}\n"


def make_splits(args, scan):
    lists = scan.extra["lists"]
    by_stem = {c.clip: c for c in scan.clips}
    trained, tested = {k: {} for k in lists}, {k: {} for k in lists}
    for k, parts in lists.items():
        for part, groups in (("train", trained[k]), ("test", tested[k])):
            for stem in parts[part]:
                if stem in by_stem:
                    c = by_stem[stem]
                    groups.setdefault(c.inputs["class_index"], set()).add(c.inputs["group"])
    if args.splits == "from-data":
        val = {k: ds.val_groups({c: sorted(g) for c, g in t.items()}, seed=ds.SPLIT_SEEDS[k]) for k, t in trained.items()}
    else:
        committed = json.loads(VAL_FILE.read_text())["splits"]
        val = {k: {int(c): g for c, g in committed[k].items()} for k in lists}
        for k, t in trained.items():
            for c, groups in t.items():
                chosen = set(val[k].get(c, []))
                if chosen & tested[k].get(c, set()) or not chosen & groups:
                    raise ValueError(f"committed val groups {sorted(chosen)} of class {c}, split {k} do not fit "
                                     f"trainlist0{k}.txt (train groups {sorted(groups)}); use --splits from-data")
    return lambda clips: ds.make_splits(clips, lists, val)


def cmd_splits(args) -> int:
    text = val_file_text()
    if args.write:
        VAL_FILE.write_text(text)
        print(f"wrote {VAL_FILE}")
        return EXIT_OK
    same = VAL_FILE.exists() and VAL_FILE.read_text() == text
    print(f"{VAL_FILE} {'matches' if same else 'DIFFERS FROM'} the rule")
    return EXIT_OK if same else EXIT_UNUSABLE


SPEC = Spec(name="ucf101", title="UCF101", module=ds, description=DESCRIPTION, download=download,
            make_splits=make_splits, class_names=lambda scan: scan.extra["class_names"],
            add_prepare_options=add_prepare_options, add_download_options=add_download_options,
            config=lambda a: ds.default_config(frame_size=a.frame_size, pad_mode=a.stft_pad),
            extra_commands={"splits": ("regenerate (--write) or check data_scripts/splits/ucf101_val_groups.json",
                                       lambda p: p.add_argument("--write", action="store_true"), cmd_splits)})

if __name__ == "__main__":
    sys.exit(main(SPEC))
