"""UCF101 (Soomro et al., 2012), audio + RGB, under the MLB protocol (paper §4.4, reference/data.md §3).

Only clips with an audio track, in the classes that have such clips (51 on the full dataset);
official splits 1-3 with seeds 109 / 19 / 337; validation = 10 % of each class's training groups
(``gXX``), so train and val share no group; 4 frames at 1 fps (shorter clips are dropped, as MLB
does); the first 3 s of 16 kHz audio (channel 0) -> log-|STFT| 257 x 136.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from mmbal.data.base import DATASETS, DatasetSplits
from mmbal.data.cached import cached_splits
from mmbal.data.media import MediaError, probe, read_audio_track, read_frames_1fps, media_problem
from mmbal.data.mlb_audio import UCF101_AUDIO, resample, ucf101_spectrogram
from mmbal.data.prepare import Clip, LayoutError, ScanResult

N_AUDIO_CLASSES = 51
SPLIT_SEEDS = {"1": 109, "2": 19, "3": 337}          # MLB: --fold k runs with this seed
SPLIT_OF_SEED = {seed: split for split, seed in SPLIT_SEEDS.items()}
VAL_FRACTION = 0.1
CLIP = re.compile(r"^v_(?P<cls>[A-Za-z]+)_g(?P<group>\d{2})_c(?P<clip>\d{2})$")


def default_config(*, frame_size=(240, 320), **audio) -> dict:
    """Protocol parameters; ``frame_size`` (H, W) = UCF101's native 240 x 320."""
    return {"n_frames": 4, "frame_size": list(frame_size), "audio": {**UCF101_AUDIO, "pad_mode": "constant", **audio}}


def shapes(config: dict) -> tuple[tuple, tuple]:
    a = config["audio"]
    n = int(round(a["seconds"] * a["sample_rate"]))
    return ((config["n_frames"], *config["frame_size"], 3), (a["n_fft"] // 2 + 1, 1 + n // a["hop"]))


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
    from tqdm import tqdm

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


def make_splits(clips: list[Clip], lists: dict, val: dict[str, dict[int, list[str]]]) -> dict:
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


@DATASETS.register("ucf101")
def ucf101(*, seed: int, root: str | None = None, split: int | str | None = None, image_size: int = 224,
           mlb_bgr_quirk: bool = False) -> DatasetSplits:
    """UCF101 audio + RGB (51 classes) from a prepared cache; split 1/2/3 (default: from seed 109/19/337, else 1)."""
    split = SPLIT_OF_SEED.get(seed, "1") if split is None else str(split)
    return cached_splits(root, dataset="ucf101", fold=split, seed=seed, image_size=image_size, bgr_0_255=mlb_bgr_quirk)
