"""AVE (Tian et al., ECCV 2018) under the MLB protocol (paper §4.3): ``python -m data_scripts.ave --help``.

28 event classes; official train / val / test lists (train ids that also occur in val or test are
removed from train); only the annotated event segment is used: 4 frames at 1 fps (topped up to 10
as MLB does) and the segment's 16 kHz audio tiled to 10 s -> log PSD (scipy-style) 257 x 1004.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_scripts._common import Spec, at_least, main
from data_scripts._download import DownloadError, check_sha256, extract, fetch_pinned, has_pointers, lift_single_folder
from data_scripts.cache import Clip, LayoutError, ScanResult
from data_scripts.media import AVE_AUDIO, MediaError, ave_spectrogram, media_problem, read_audio_track, \
    read_frames_1fps, resample
from mmbal.data.real import AVE_CLASSES

LIST_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
N_VIDEOS = 4143

DRIVE_ID = "1FjKwe79e0u96vdjIVwfRQ1V6SoDHe7kK"   # the AVE_Dataset link in the YapengTian/AVE-ECCV18 README
ARCHIVE_URL = f"https://drive.usercontent.google.com/download?id={DRIVE_ID}&export=download&confirm=t"
ARCHIVE_SHA256 = None    # AVE_Dataset.zip: no checksum is published (README, Drive): download prints it

DESCRIPTION = f"""AVE (Tian et al. 2018; 4,143 ten-second YouTube clips, 28 events) for the MLB protocol.

Steps (each resumable; a second run does only what is missing):
  download  fetch AVE_Dataset.zip from the Google-Drive link in the AVE-ECCV18 README,
            https://drive.google.com/open?id={DRIVE_ID},
            and unpack it into --raw (also over videos that are Git-LFS pointers). If Drive
            refuses (quota, login page), download it in a browser and pass --archive <file>.
            No checksum is published for the archive: its sha256 is printed to compare.
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
Exit codes: 0 usable, 1 unusable, 2 missing folder, wrong layout or unwritable cache, 3 download
failed, 130 / 143 stopped by Ctrl-C / SIGTERM (rerun the same command to resume).
"""


def default_config(*, frame_size=(240, 320), min_saved: int = 10, **audio) -> dict:
    """Protocol parameters; ``frame_size`` is the stored (H, W) of each frame (our choice, not MLB's).

    ``min_saved=10`` is MLB's top-up: a segment shorter than 10 s gets seeded extra frames before
    the first 4 (in time order) are kept, so short segments mix 1-fps and extra frames.
    """
    return {"n_frames": 4, "min_saved": min_saved, "frame_size": list(frame_size), "audio": {**AVE_AUDIO, **audio}}


def shapes(config: dict) -> tuple[tuple, tuple]:
    a = config["audio"]
    n = int(round(a["seconds"] * a["sample_rate"]))
    hop = a["nperseg"] - a["noverlap"]
    return ((config["n_frames"], *config["frame_size"], 3), (a["nperseg"] // 2 + 1, 1 + (n - a["nperseg"]) // hop))


def parse_line(line: str, where: str) -> tuple[str, str, int, int] | None:
    """``Category&VideoID&Quality&Start&End`` -> (category, id, start, end); None for a header line."""
    fields = line.strip().split("&")
    if len(fields) != 5:
        raise LayoutError(f"{where}: expected 5 '&'-separated fields, got {line.strip()!r}")
    if not fields[3].strip().isdigit():
        return None                                           # "Category&VideoID&Quality&StartTime&EndTime"
    return fields[0], fields[1], int(fields[3]), int(fields[4])


def _layout(raw: Path) -> Path:
    if not raw.is_dir():
        raise LayoutError(f"AVE folder {raw} does not exist")
    needed = ["AVE/", "Annotations.txt", *LIST_FILES.values()]
    missing = [n for n in needed if not (raw / n.rstrip("/")).exists()]
    if missing:
        nested = sorted(p.parent for p in raw.glob("*/Annotations.txt"))
        hint = f"; found Annotations.txt inside {nested[0]} - pass that folder instead" if nested else ""
        raise LayoutError(f"{raw} is not an AVE folder: missing {', '.join(missing)} (expected "
                          f"AVE/<id>.mp4, Annotations.txt, trainSet.txt, valSet.txt, testSet.txt){hint}")
    return raw / "AVE"


def scan(raw: str | Path, *, check_media: bool = True, progress: bool = False) -> ScanResult:
    """Read the official lists, dedupe and de-overlap them, and check every referenced video."""
    raw = Path(raw)
    video_dir = _layout(raw)
    excluded, notes, lists = [], [], {}
    for part, name in LIST_FILES.items():
        seen, rows = set(), []
        for n, line in enumerate((raw / name).read_text().splitlines(), 1):
            if not line.strip():
                continue
            parsed = parse_line(line, f"{raw / name} line {n}")
            if parsed is None:
                continue
            cat, vid, start, end = parsed
            clip = f"{vid}_{start}_{end}"
            if cat not in AVE_CLASSES:
                excluded.append({"clip": clip, "step": "layout", "reason": f"{name} line {n}: unknown category {cat!r}"})
            elif vid in seen:                                 # MLB keeps the first line of a video per list
                excluded.append({"clip": clip, "step": "protocol", "reason": f"{name} line {n}: video {vid} already listed"})
            elif end <= start:                                # MLB skips segments with end == 0
                excluded.append({"clip": clip, "step": "protocol", "reason": f"{name} line {n}: empty segment {start}-{end} s"})
            else:
                seen.add(vid)
                rows.append((cat, vid, start, end))
        lists[part] = rows
    held_out = {vid for part in ("val", "test") for _, vid, _, _ in lists[part]}
    overlap = sorted({vid for _, vid, _, _ in lists["train"]} & held_out)
    if overlap:
        notes.append(f"removed {len(overlap)} train videos that also occur in val/test: {', '.join(overlap)}")
        for cat, vid, start, end in lists["train"]:
            if vid in overlap:
                excluded.append({"clip": f"{vid}_{start}_{end}", "step": "protocol",
                                 "reason": "train video also in the val or test list (leakage); removed from train"})
        lists["train"] = [r for r in lists["train"] if r[1] not in overlap]
    clips, by_id = [], {}
    for part, rows in lists.items():
        for cat, vid, start, end in rows:
            clip = f"{vid}_{start}_{end}"
            if clip not in by_id:
                label = AVE_CLASSES.index(cat)
                by_id[clip] = Clip(clip, label, cat, vid, {"video": str(video_dir / f"{vid}.mp4"),
                                                           "start": start, "end": end})
                clips.append(by_id[clip])
    clips.sort(key=lambda c: c.clip)
    if check_media:
        for clip in tqdm(clips, desc="AVE: checking files", unit="clip", disable=not progress):
            clip.problem = media_problem(clip.inputs["video"], kind="video")
    n_videos = len(list(video_dir.glob("*.mp4")))
    if n_videos != N_VIDEOS:
        notes.append(f"found {n_videos:,} videos in {video_dir}; the full AVE release has {N_VIDEOS:,}")
    counts = {"mp4 files": n_videos, **{f"{p} list entries": len(r) for p, r in lists.items()},
              "candidate clips": len(clips), "overlapping train ids removed": len(overlap)}
    extra = {"lists": {p: [f"{vid}_{s}_{e}" for _, vid, s, e in rows] for p, rows in lists.items()},
             "overlap": overlap}
    return ScanResult(clips, excluded, counts, notes, extra)


def process(clip: Clip, config: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """One event segment -> frames (4, H, W, 3) uint8, log-PSD (257, 1004), info."""
    a = config["audio"]
    start, end = clip.inputs["start"], clip.inputs["end"]
    track = read_audio_track(clip.inputs["video"], mix="mean")             # librosa.load's mono mix
    if track is None:
        raise MediaError(f"{clip.inputs['video']}: no audio track")
    wave, sr = track
    x = resample(torch.from_numpy(wave), sr, a["sample_rate"])
    segment = x[a["sample_rate"] * start: a["sample_rate"] * end]         # MLB: samples[sr*start : sr*end]
    if segment.numel() == 0:
        raise MediaError(f"{clip.inputs['video']}: audio lasts {x.numel() / a['sample_rate']:.1f} s, "
                         f"so the event segment {start}-{end} s is empty")
    spec = ave_spectrogram(segment, sample_rate=a["sample_rate"], seconds=a["seconds"],
                           nperseg=a["nperseg"], noverlap=a["noverlap"])
    fr = read_frames_1fps(clip.inputs["video"], n_frames=config["n_frames"], min_saved=config["min_saved"],
                          size=tuple(config["frame_size"]), seed_key=clip.clip, first_second=start, last_second=end)
    return fr.frames, spec.numpy(), {"n_one_fps": fr.n_one_fps}


def official_splits(clips: list[Clip], lists: dict[str, list[str]]) -> dict:
    """The official lists restricted to the clips that prepared fine (one fold, "0")."""
    have = {c.clip for c in clips}
    return {"rule": "official AVE lists; train ids also in val/test removed; first line per video kept",
            "folds": {"0": {p: sorted(c for c in ids if c in have) for p, ids in lists.items()}}}


def download(args) -> None:
    """Fetch and unpack AVE_Dataset.zip; skipped when the media are there (and none is a Git-LFS pointer)."""
    raw: Path = args.raw
    if (raw / "Annotations.txt").exists() and (raw / "AVE").is_dir() and not has_pointers((raw / "AVE").glob("*.mp4")):
        print(f"AVE already unpacked in {raw}; nothing to download")
        return
    source, pin = args.archive or ARCHIVE_URL, "data_scripts.ave.ARCHIVE_SHA256"
    if Path(source).exists():
        archive = check_sha256(Path(source), ARCHIVE_SHA256, pin=pin)
    else:
        archive = fetch_pinned(source, raw / "_download" / "AVE_Dataset.zip", ARCHIVE_SHA256, pin=pin,
                               progress=not args.no_progress)
    print(f"unpacking {archive} into {raw}")
    unpacked = raw / "_download" / "unpacked"
    try:
        extract(archive, unpacked)
    except Exception as err:  # noqa: BLE001 - a bad zip from a quota page, typically
        raise DownloadError(f"cannot unpack {archive}: {err}") from None
    lift_single_folder(unpacked, "Annotations.txt")
    for f in sorted(p for p in unpacked.rglob("*") if p.is_file()):     # over what is there (pointers included)
        (raw / f.relative_to(unpacked)).parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, raw / f.relative_to(unpacked))
    shutil.rmtree(unpacked)


def add_download_options(p) -> None:
    p.add_argument("--archive", help="AVE_Dataset.zip: a local file or a URL (default: the README's Drive link)")


def add_prepare_options(p) -> None:
    p.add_argument("--min-saved", type=at_least(0), default=10,
                   help="MLB tops each segment up to this many frames before taking the first 4 (default 10, "
                        "as MLB; 4 keeps true 1-fps frames whenever a segment spans 4 seconds)")


def splitter(args, found: ScanResult):
    """The official lists found by ``scan`` (AVE has no split option)."""
    return lambda clips: official_splits(clips, found.extra["lists"])


SPEC = Spec(name="ave", title="AVE", description=DESCRIPTION, scan=scan, process=process, shapes=shapes,
            config=lambda a: default_config(frame_size=a.frame_size, min_saved=a.min_saved),
            make_splits=splitter,
            class_names=lambda _: AVE_CLASSES, download=download,
            add_download_options=add_download_options, add_prepare_options=add_prepare_options)

if __name__ == "__main__":
    sys.exit(main(SPEC))
