"""AVE for the MLB protocol: ``python -m data_scripts.ave --help``."""
from __future__ import annotations

import sys
from pathlib import Path

from data_scripts._common import Spec, main
from data_scripts._download import DownloadError, extract, fetch, lift_single_folder
from mmbal.data import ave as ds

DRIVE_ID = "1FjKwe79e0u96vdjIVwfRQ1V6SoDHe7kK"   # the AVE_Dataset link in the YapengTian/AVE-ECCV18 README
ARCHIVE_URL = f"https://drive.usercontent.google.com/download?id={DRIVE_ID}&export=download&confirm=t"

DESCRIPTION = f"""AVE (Tian et al. 2018; 4,143 ten-second YouTube clips, 28 events) for the MLB protocol.

Steps (each resumable; a second run does only what is missing):
  download  fetch AVE_Dataset.zip from the Google-Drive link in the AVE-ECCV18 README,
            https://drive.google.com/open?id={DRIVE_ID},
            and unpack it into --raw. If Drive refuses (quota, login page), download it in a
            browser and pass --archive <file>.
            No licence is stated (YouTube content): research use, do not redistribute.
  verify    check <raw>/AVE/*.mp4, Annotations.txt, trainSet.txt, valSet.txt, testSet.txt;
            parse the lists ("Category&VideoID&Quality&Start&End"); keep the first line of a
            video in each list (as MLB); remove from train the videos that also occur in val or
            test (8 shared with test, 10 with val in the official lists; all named in the
            report); check every video.
  prepare   per listed event segment: 4 frames at 1 fps inside [start, end] s (topped up to
            10 frames with seeded extra frames from the segment, as MLB does, then the first 4
            in time order), stored as uint8; audio = mean of the channels, resampled to 16 kHz,
            cut to the segment, tiled to 10 s, log power spectral density (scipy-style
            spectrogram, Tukey 0.25 window, nperseg 512, noverlap 353) = 257 x 1004, float16.
  report    sizes, split sizes, clips left out and why.
  all       verify + prepare + report (add --download to fetch first).

Typical run (estimates: download 5-30 min for a few GB, prepare 15-30 min on 8 cores, cache ~6 GB):
  python -m data_scripts.ave all --download --raw ~/mmbal_data/ave/raw --cache ~/mmbal_data/ave/cache
Exit codes: 0 usable, 1 unusable, 2 missing folder or wrong layout, 3 download failed.
"""


def download(args) -> None:
    raw: Path = args.raw
    if (raw / "Annotations.txt").exists() and (raw / "AVE").is_dir():
        print(f"AVE already unpacked in {raw}; nothing to download")
        return
    source = args.archive or ARCHIVE_URL
    if Path(source).exists():
        archive = Path(source)
    else:
        archive = fetch(source, raw / "_download" / "AVE_Dataset.zip", progress=not args.no_progress)
    print(f"unpacking {archive} into {raw}")
    try:
        extract(archive, raw)
    except Exception as err:  # noqa: BLE001 - a bad zip from a quota page, typically
        raise DownloadError(f"cannot unpack {archive}: {err}") from None
    lift_single_folder(raw, "Annotations.txt")


def add_download_options(p) -> None:
    p.add_argument("--archive", help="AVE_Dataset.zip: a local file or a URL (default: the README's Drive link)")


def add_prepare_options(p) -> None:
    p.add_argument("--min-saved", type=int, default=10,
                   help="MLB tops each segment up to this many frames before taking the first 4 (default 10, "
                        "as MLB; 4 keeps true 1-fps frames whenever a segment spans 4 seconds)")


def make_splits(args, scan):
    return lambda clips: ds.make_splits(clips, scan.extra["lists"])


SPEC = Spec(name="ave", title="AVE", module=ds, description=DESCRIPTION, download=download,
            make_splits=make_splits, class_names=lambda scan: ds.CLASS_NAMES,
            add_download_options=add_download_options, add_prepare_options=add_prepare_options,
            config=lambda a: ds.default_config(frame_size=a.frame_size, min_saved=a.min_saved))

if __name__ == "__main__":
    sys.exit(main(SPEC))
