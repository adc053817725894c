"""CREMA-D (Cao et al., 2014) under the MLB protocol (paper §4.2, reference/data.md §1).

6 emotions from the file name; 3 frames at 1 fps from ``VideoFlash/*.flv``; audio from
``AudioWAV/*.wav`` resampled to 22.05 kHz, tiled to 3 s, log-|STFT| (n_fft 512, hop 353) -> 257 x 188;
speaker-independent folds of 63 / 14 / 14 actors; folds 0, 1, 2 go with seeds 109, 19, 337.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from mmbal.data.base import DATASETS, DatasetSplits
from mmbal.data.cached import cached_splits
from mmbal.data.media import MediaError, media_problem, read_frames_1fps, read_wav
from mmbal.data.mlb_audio import CREMAD_AUDIO, cremad_spectrogram, resample
from mmbal.data.prepare import Clip, LayoutError, ScanResult

EMOTIONS = {"NEU": 0, "HAP": 1, "SAD": 2, "FEA": 3, "DIS": 4, "ANG": 5}   # OGM-GE / MLB order
CLASS_NAMES = ["neutral", "happy", "sad", "fear", "disgust", "anger"]
ACTORS = [str(a) for a in range(1001, 1092)]                              # the 91 actors
N_CLIPS = 7442
KNOWN_BAD = {  # the CREMA-D README lists these as faulty
    "1076_MTI_SAD_XX": "no audio signal (listed as faulty in the CREMA-D README)",
    "1076_MTI_NEU_XX": "listed as faulty in the CREMA-D README",
    "1064_TIE_SAD_XX": "listed as faulty in the CREMA-D README",
    "1064_IEO_DIS_MD": "listed as faulty in the CREMA-D README",
}
NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")
MLB_FOLD_OF_SEED = {109: "0", 19: "1", 337: "2"}
FOLD_SEED = 0            # numpy default_rng seed of the actor permutation behind the committed folds
N_FOLDS = 5


def default_config(*, frame_size=(240, 320), pad_mode: str = "constant", **audio) -> dict:
    """Protocol parameters; ``frame_size`` is the stored (H, W) of each frame (our choice, not MLB's)."""
    return {"n_frames": 3, "min_saved": 3, "frame_size": list(frame_size),
            "audio": {**CREMAD_AUDIO, "pad_mode": pad_mode, **audio}}


def shapes(config: dict) -> tuple[tuple, tuple]:
    """(frames_shape, audio_shape) of one cache row."""
    a = config["audio"]
    n = int(round(a["seconds"] * a["sample_rate"]))
    return ((config["n_frames"], *config["frame_size"], 3), (a["n_fft"] // 2 + 1, 1 + n // a["hop"]))


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
    from tqdm import tqdm

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
        clips.append(Clip(stem, label, CLASS_NAMES[label], m["actor"],
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
    block = max(1, round(len(actors) * 14 / 91))
    if n_folds * block > len(actors) or len(actors) - 2 * block < 1:
        raise ValueError(f"{len(actors)} actors are too few for {n_folds} folds of {block} test actors")
    perm = [actors[i] for i in np.random.default_rng(seed).permutation(len(actors))]
    blocks = [perm[k * block:(k + 1) * block] for k in range(n_folds)]
    folds = {}
    for k in range(n_folds):
        test, val = blocks[k], blocks[(k + 1) % n_folds]
        folds[str(k)] = {"train": sorted(set(actors) - set(test) - set(val)), "val": sorted(val), "test": sorted(test)}
    return folds


def splits_from_actor_folds(clips: list[Clip], actor_folds: dict, *, rule: str) -> dict:
    """Clip-level splits from actor-level folds; an actor missing from the folds is an error."""
    known = {a for parts in actor_folds.values() for ids in parts.values() for a in ids}
    unknown = sorted({c.group for c in clips} - known)
    if unknown:
        raise ValueError(f"actors {', '.join(unknown)} are not in the fold file; use the from-data rule")
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


@DATASETS.register("cremad")
def cremad(*, seed: int, root: str | None = None, fold: int | str | None = None, image_size: int = 224) -> DatasetSplits:
    """CREMA-D (6 emotions) from a prepared cache; fold 0/1/2 (default: from seed 109/19/337, else 0)."""
    fold = MLB_FOLD_OF_SEED.get(seed, "0") if fold is None else str(fold)
    return cached_splits(root, dataset="cremad", fold=fold, seed=seed, image_size=image_size)
