"""AVE (Tian et al., ECCV 2018) under the MLB protocol (paper §4.3, reference/data.md §2).

28 event classes; official train / val / test lists (train ids that also occur in val or test are
removed from train); only the annotated event segment is used: 4 frames at 1 fps (topped up to 10
as MLB does) and the segment's 16 kHz audio tiled to 10 s -> log PSD (scipy-style) 257 x 1004.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmbal.data.base import DATASETS, DatasetSplits
from mmbal.data.cached import cached_splits
from mmbal.data.media import MediaError, media_problem, read_audio_track, read_frames_1fps
from mmbal.data.mlb_audio import AVE_AUDIO, ave_spectrogram, resample
from mmbal.data.prepare import Clip, LayoutError, ScanResult

CLASS_NAMES = [  # MLB's order (datasets/AVE/AVE_Dataset.py); the strings are AVE's category names
    "Church bell", "Male speech, man speaking", "Bark", "Fixed-wing aircraft, airplane",
    "Race car, auto racing", "Female speech, woman speaking", "Helicopter", "Violin, fiddle", "Flute",
    "Ukulele", "Frying (food)", "Truck", "Shofar", "Motorcycle", "Acoustic guitar", "Train horn", "Clock",
    "Banjo", "Goat", "Baby cry, infant cry", "Bus", "Chainsaw", "Cat", "Horse", "Toilet flush",
    "Rodents, rats, mice", "Accordion", "Mandolin",
]
LIST_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
N_VIDEOS = 4143


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
    from tqdm import tqdm

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
            if cat not in CLASS_NAMES:
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
                label = CLASS_NAMES.index(cat)
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


def make_splits(clips: list[Clip], lists: dict[str, list[str]]) -> dict:
    """The official lists restricted to the clips that prepared fine (one fold, "0")."""
    have = {c.clip for c in clips}
    return {"rule": "official AVE lists; train ids also in val/test removed; first line per video kept",
            "folds": {"0": {p: sorted(c for c in ids if c in have) for p, ids in lists.items()}}}


@DATASETS.register("ave")
def ave(*, seed: int, root: str | None = None, image_size: int = 224) -> DatasetSplits:
    """AVE (28 events) from a prepared cache: the official split; the seed only drives augmentation."""
    return cached_splits(root, dataset="ave", fold="0", seed=seed, image_size=image_size)
