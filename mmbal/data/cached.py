"""Reading a prepared cache: memory-mapped arrays + the MLB code's image transforms.

A cache folder (written by ``data_scripts``) holds ``frames.npy`` (N, T, H, W, 3) uint8 1-fps frames,
``audio.npy`` (N, F, T_a) float16 log-spectrograms, ``index.csv`` (row, clip, label, label_name, group,
n_one_fps), ``splits.json`` ({"folds": {fold: {"train"|"val"|"test": [clip...]}}}), ``skipped.csv``
and, written last, ``meta.json``: its presence means the cache is complete. ``meta.json["files"]``
records each array's shape, dtype and bytes and each small file's bytes and sha256; opening a cache
checks them (a cache written before these records existed is checked against its shapes only). CREMA-D's optional
``features/`` (``data_scripts.cremad features``): ``audio/fold<k>/<clip>.npy`` (T, 1024) and ``video/<clip>.npy``
(faces, 1408) float16, ``face_stats_fold<k>.npy`` (2, 1408) mean / std, ``no_face.csv``, then ``meta.json``.

Train: per frame ``RandomResizedCrop(size)`` + ``RandomHorizontalFlip``; eval: ``Resize((size, size))``; both then
ImageNet normalisation. Sample ``i`` in epoch ``e`` is seeded by ``(seed, e, i)``, whatever the worker count.
"""
from __future__ import annotations

import csv
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from mmbal.data.base import DatasetSplits, MultimodalDataset

CACHE_VERSION = 1
ARRAYS = {"frames.npy": ("frames_shape", "uint8"), "audio.npy": ("audio_shape", "float16")}
SMALL_FILES = ("index.csv", "splits.json", "skipped.csv")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CacheError(FileNotFoundError):
    """A cache folder that is missing, incomplete, damaged or of the wrong dataset; the message says what to run."""

    file = reason = None      # the damaged file of a complete cache, and how (None: missing or incomplete)


@dataclass
class Cache:
    """A complete cache folder, opened read-only and memory-mapped."""

    root: Path
    meta: dict
    index: list[dict]
    splits: dict
    frames: np.ndarray   # (N, T, H, W, 3) uint8 memmap
    audio: np.ndarray    # (N, F, T_a) float16 memmap


def rebuild_command(root: Path, dataset: str, meta: dict | None = None) -> str:
    """The data_scripts command that built (and so repairs) the cache at ``root``."""
    saved = root / ".work" / "rebuild.txt"
    cmd = (meta or {}).get("rebuild") or (saved.read_text().strip() if saved.is_file() else
                                          f"python -m data_scripts.{dataset} all --raw <the raw {dataset} folder>")
    return f"{cmd} --cache {root}"


def _damaged(root: Path, name: str, reason: str, how: str) -> CacheError:
    err = CacheError(f"{root / name}: {reason}. Repair it with: {how}")
    err.file, err.reason = name, reason
    return err


def _read_checked(root: Path, meta: dict, how: str) -> tuple[list[dict], dict, np.ndarray, np.ndarray]:
    """index rows, splits and the two memmaps, each checked against what meta.json records."""
    files, arrays = meta.get("files", {}), []
    for name, (key, dtype) in ARRAYS.items():           # older caches: the shapes in meta.json
        want = files.get(name) or {"shape": [meta["n_rows"], *meta[key]], "dtype": dtype}
        try:
            a = np.load(root / name, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise _damaged(root, name, f"truncated or not a .npy array ({err})", how) from None
        size, want_size = (root / name).stat().st_size, want.get("bytes", a.offset + a.nbytes)
        if list(a.shape) != list(want["shape"]) or str(a.dtype) != want["dtype"] or size != want_size:
            raise _damaged(root, name, f"holds {a.dtype} {list(a.shape)} in {size:,} bytes, meta.json says "
                                       f"{want['dtype']} {want['shape']} in {want_size:,} bytes", how)
        arrays.append(a)
    index, n, n_classes = [], len(arrays[0]), len(meta["class_names"])
    with open(root / "index.csv", newline="") as f:
        for line, r in enumerate(csv.DictReader(f), 2):
            row, label, n_one_fps = (r.get(k) or "" for k in ("row", "label", "n_one_fps"))
            if not all(v.isdigit() for v in (row, label, n_one_fps)) or int(row) >= n or int(label) >= n_classes \
                    or not r.get("clip"):
                raise _damaged(root, "index.csv", f"line {line} is not a row of {n} rows with a label "
                                                  f"below {n_classes}: {','.join(map(str, r.values()))}", how)
            index.append(dict(r, row=int(row), label=int(label), n_one_fps=int(n_one_fps)))
    try:
        splits = json.loads((root / "splits.json").read_text())
        splits["folds"].items()
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise _damaged(root, "splits.json", f"not the splits JSON ({type(err).__name__}: {err})", how) from None
    for name in SMALL_FILES:
        if name in files and hashlib.sha256((root / name).read_bytes()).hexdigest() != files[name]["sha256"]:
            raise _damaged(root, name, "its sha256 differs from the one meta.json records (changed or damaged)", how)
    return index, splits, arrays[0], arrays[1]


def open_cache(root: str | Path | None, *, dataset: str) -> Cache:
    """Open the cache of ``dataset`` at ``root``; a missing, half-written or damaged one raises CacheError."""
    how = f"python -m data_scripts.{dataset} all --raw <downloaded {dataset} folder> --cache {root or '<cache folder>'}"
    if root is None:
        raise CacheError(f"dataset {dataset!r} reads a prepared cache: pass root=<cache folder> "
                         f"(CLI: --data-root). Build one with: {how}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CacheError(f"no {dataset} cache at {root} (folder does not exist). Build it with: {how}")
    if not (root / "meta.json").exists():
        state = ("incomplete (a prepare run was interrupted or is running)" if (root / ".work").exists()
                 else "not a cache (no meta.json)")
        raise CacheError(f"{root} is {state}. Run: {how}")
    try:
        meta = json.loads((root / "meta.json").read_text())
    except ValueError as err:
        raise _damaged(root, "meta.json", f"not valid JSON ({err})", rebuild_command(root, dataset)) from None
    how = rebuild_command(root, dataset, meta)
    if meta.get("dataset") != dataset:
        raise CacheError(f"{root} holds a {meta.get('dataset')!r} cache, not {dataset!r}")
    if meta.get("version") != CACHE_VERSION:
        raise CacheError(f"{root} was written by cache format {meta.get('version')}, this mmbal reads "
                         f"{CACHE_VERSION}; rebuild it with: {how} --force")
    for name in (*ARRAYS, *SMALL_FILES):
        if not (root / name).exists():
            raise _damaged(root, name, "missing", how)
    try:
        return Cache(root, meta, *_read_checked(root, meta, how))
    except KeyError as err:
        raise _damaged(root, "meta.json", f"lacks the entry {err}", how) from None


class FrameTransform:
    """MLB's per-frame pipeline on a (T, H, W, 3) uint8 array -> (3, T, S, S) float32."""

    def __init__(self, *, train: bool, image_size: int = 224, bgr_0_255: bool = False):
        self.train, self.bgr_0_255 = train, bgr_0_255   # bgr_0_255: MLB's UCF101 quirk, BGR and not divided by 255
        self.geometry = (v2.Compose([v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()])
                         if train else v2.Resize((image_size, image_size), antialias=True))
        self.normalize = v2.Compose([v2.ToDtype(torch.float32, scale=not bgr_0_255),
                                     v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __call__(self, frames: np.ndarray, seed: int | None = None) -> torch.Tensor:
        x = torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2)           # (T, H, W, 3) -> (T, 3, H, W)
        x = x.flip(1) if self.bgr_0_255 else x                                     # RGB -> BGR
        if self.train:
            with torch.random.fork_rng(devices=[]):                                # leave the global RNG alone
                if seed is not None:
                    torch.default_generator.manual_seed(seed)                      # CPU only: CUDA's RNG is the model's
                x = torch.stack([self.geometry(f) for f in x])                     # each frame its own crop/flip
        else:
            x = self.geometry(x)
        return self.normalize(x).permute(1, 0, 2, 3).contiguous()                  # (T, 3, S, S) -> (3, T, S, S)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for the augmentation of one sample in one epoch."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, np.uint64)[0] >> 1)


class CachedAVDataset(MultimodalDataset):
    """One split of a prepared cache: ``{"audio": (1, F, T), "video": (3, T, S, S), "label": ()}``;
    the memory maps open lazily in each process, so DataLoader workers never pickle them."""

    def __init__(self, root: str | Path, rows: list[int], labels: list[int], *, class_names: list[str],
                 train: bool, seed: int, image_size: int = 224, bgr_0_255: bool = False):
        self.root, self.rows, self._arrays = Path(root), np.asarray(rows, dtype=np.int64), None
        self._labels = torch.as_tensor(labels, dtype=torch.long)
        self.class_names, self.num_classes = list(class_names), len(class_names)
        self.train, self.seed, self.epoch, self.image_size = train, seed, 0, image_size
        self.transform = FrameTransform(train=train, image_size=image_size, bgr_0_255=bgr_0_255)

    def _open(self):
        if self._arrays is None:
            self._arrays = (np.load(self.root / "frames.npy", mmap_mode="r"),
                            np.load(self.root / "audio.npy", mmap_mode="r"))
        return self._arrays

    def __getstate__(self):
        return {**self.__dict__, "_arrays": None}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        frames, audio = self._open()
        row = int(self.rows[i])
        spec = torch.from_numpy(np.asarray(audio[row], dtype=np.float32))[None]   # (F, T) -> (1, F, T)
        seed = sample_seed(self.seed, self.epoch, i) if self.train else None
        return {"audio": spec, "video": self.transform(frames[row], seed), "label": self._labels[i]}

    def labels(self) -> torch.Tensor:
        return self._labels

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        frames, audio = self._open()
        return {"audio": (1, *audio.shape[1:]), "video": (3, frames.shape[1], self.image_size, self.image_size)}


class FeatureDataset(MultimodalDataset):
    """One split of the CREMA-D feature cache (``python -m data_scripts.cremad features``): ``{"audio": (T_a, 1024)
    wav2vec 2.0 frames, "video": (T_v, 1408) face embeddings standardised with the fold's training statistics}``,
    cut to ``lengths`` and zero-padded to it (all-zero frames are padding: ``mmbal.models.sequence``)."""

    def __init__(self, root: Path, clips: list[str], labels: list[int], *, fold: str, face_stats: np.ndarray,
                 lengths: dict[str, int], class_names: list[str]):
        self.root, self.clips, self.fold, self.face_stats, self.lengths = root, clips, fold, face_stats, lengths
        self._labels, self.class_names, self.num_classes = torch.as_tensor(labels), class_names, len(class_names)

    def __len__(self) -> int:
        return len(self.clips)

    def _read(self, m: str, clip: str) -> torch.Tensor:
        x = np.load(self.root / (f"audio/fold{self.fold}" if m == "audio" else "video") / f"{clip}.npy")
        x = x[: self.lengths[m]].astype(np.float32)                                 # (T, D)
        x = (x - self.face_stats[0]) / self.face_stats[1] if m == "video" else x     # per-fold standardisation
        return torch.from_numpy(np.pad(x, ((0, self.lengths[m] - len(x)), (0, 0))))  # (lengths[m], D)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {m: self._read(m, self.clips[i]) for m in self.modalities} | {"label": self._labels[i]}

    def labels(self) -> torch.Tensor:
        return self._labels


def feature_splits(root: str | Path | None, *, fold: str, max_frames: int = 150) -> DatasetSplits:
    """Train / val / test of ``fold`` from the features beside a CREMA-D cache; clips without a detected face are
    left out (MLB's loader drops clips without a face-feature file) and named in features/no_face.csv."""
    cache = open_cache(root, dataset="cremad")
    feats, how = cache.root / "features", f"python -m data_scripts.cremad features --cache {cache.root}"
    meta = json.loads((feats / "meta.json").read_text()) if (feats / "meta.json").is_file() else {"folds": []}
    splits = hashlib.sha256((cache.root / "splits.json").read_bytes()).hexdigest()  # statistics belong to the folds
    if fold not in meta["folds"] or meta["splits_sha256"] != splits:
        raise CacheError(f"{feats} has no features for fold {fold} of these splits; run: {how} --fold-ids {fold}")
    if meta["no_face"]:
        warnings.warn(f"{len(meta['no_face'])} clips without a detected face are left out ({feats}/no_face.csv)")
    lengths = {"audio": meta["max_frames"]["audio"], "video": min(max_frames, meta["max_frames"]["video"])}
    label, stats = {r["clip"]: r["label"] for r in cache.index}, np.load(feats / f"face_stats_fold{fold}.npy")
    clips = {p: [c for c in names if c not in meta["no_face"]] for p, names in cache.splits["folds"][fold].items()
             if p in ("train", "val", "test")}
    return DatasetSplits(**{p: FeatureDataset(feats, cs, [label[c] for c in cs], fold=fold, face_stats=stats,
                                              lengths=lengths, class_names=cache.meta["class_names"])
                            for p, cs in clips.items()})


def cached_splits(root: str | Path | None, *, dataset: str, fold: str, seed: int, image_size: int = 224,
                  bgr_0_255: bool = False, fold_set: str | None = None) -> DatasetSplits:
    """Train / val / test of ``fold`` from the cache of ``dataset`` at ``root``; ``fold_set`` (mlb: the MLB
    code's fold file, regenerated: the data script's rule) must be the one the cache was prepared with."""
    cache = open_cache(root, dataset=dataset)
    folds = cache.splits["folds"]
    if fold_set not in (None, "mlb", "regenerated"):
        raise ValueError(f"{dataset}: fold_set must be 'mlb' or 'regenerated', got {fold_set!r}")
    have = "mlb" if cache.splits.get("rule", "").startswith("MLB") else "regenerated"
    if fold_set not in (None, have):
        flag = "mlb" if fold_set == "mlb" else "committed"
        raise CacheError(f"{cache.root} holds the {have} folds, not the {fold_set} ones: rewrite its splits with "
                         f"python -m data_scripts.{dataset} prepare --folds {flag} --raw <raw folder> --cache "
                         f"{cache.root}, or pass the data option fold_set={have}")
    if fold not in folds:
        raise ValueError(f"{dataset}: fold {fold!r} is not in the cache at {cache.root}; "
                         f"available folds: {', '.join(sorted(folds))}")
    by_clip = {r["clip"]: r for r in cache.index}
    parts = {}
    for part in ("train", "val", "test"):
        missing = [c for c in folds[fold][part] if c not in by_clip]
        if missing:
            raise CacheError(f"{cache.root}: splits.json names {len(missing)} clips absent from index.csv "
                             f"(e.g. {missing[0]}); repair it with: {rebuild_command(cache.root, dataset, cache.meta)}")
        rows = [by_clip[c] for c in folds[fold][part]]
        parts[part] = CachedAVDataset(cache.root, [r["row"] for r in rows], [r["label"] for r in rows],
                                      class_names=cache.meta["class_names"], train=part == "train",
                                      seed=seed, image_size=image_size, bgr_0_255=bgr_0_255)
    return DatasetSplits(**parts)
