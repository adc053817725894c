"""Loaders over a prepared cache: memory-mapped arrays + the MLB image transforms (paper §4.2).

Train: per frame ``RandomResizedCrop(size)`` + ``RandomHorizontalFlip``; eval: ``Resize((size, size))``;
both then ImageNet normalisation. The randomness of sample ``i`` in epoch ``e`` is seeded by
``(seed, e, i)``, so a run is reproducible whatever the DataLoader's worker count.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmbal.data.base import DatasetSplits, MultimodalDataset
from mmbal.data.cache_store import CacheError, open_cache

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrameTransform:
    """MLB's per-frame pipeline on a (T, H, W, 3) uint8 array -> (3, T, S, S) float32."""

    def __init__(self, *, train: bool, image_size: int = 224, bgr_0_255: bool = False):
        from torchvision.transforms import v2

        self.train = train
        if train:
            self.geometry = v2.Compose([v2.RandomResizedCrop(image_size, antialias=True),
                                        v2.RandomHorizontalFlip()])
        else:
            self.geometry = v2.Resize((image_size, image_size), antialias=True)
        # bgr_0_255 reproduces MLB's UCF101 quirk: BGR channels, values not divided by 255
        self.bgr_0_255 = bgr_0_255
        self.normalize = v2.Compose([v2.ToDtype(torch.float32, scale=not bgr_0_255),
                                     v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __call__(self, frames: np.ndarray, seed: int | None = None) -> torch.Tensor:
        x = torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2)           # (T, H, W, 3) -> (T, 3, H, W)
        if self.bgr_0_255:
            x = x.flip(1)                                                          # RGB -> BGR
        if self.train:
            with torch.random.fork_rng(devices=[]):                                # leave the global RNG alone
                if seed is not None:
                    torch.manual_seed(seed)
                x = torch.stack([self.geometry(f) for f in x])                     # each frame its own crop/flip
        else:
            x = self.geometry(x)
        return self.normalize(x).permute(1, 0, 2, 3).contiguous()                  # (T, 3, S, S) -> (3, T, S, S)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for the augmentation of one sample in one epoch."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, np.uint64)[0] >> 1)


class CachedAVDataset(MultimodalDataset):
    """One split of a prepared cache: ``{"audio": (1, F, T), "video": (3, T, S, S), "label": ()}``.

    The memory maps are opened lazily in each process, so DataLoader workers never pickle them.
    """

    def __init__(self, root: str | Path, rows: list[int], labels: list[int], *, class_names: list[str],
                 train: bool, seed: int, image_size: int = 224, bgr_0_255: bool = False):
        self.root = Path(root)
        self.rows = np.asarray(rows, dtype=np.int64)
        self._labels = torch.as_tensor(labels, dtype=torch.long)
        self.class_names = list(class_names)
        self.num_classes = len(class_names)
        self.train, self.seed, self.epoch, self.image_size = train, seed, 0, image_size
        self.transform = FrameTransform(train=train, image_size=image_size, bgr_0_255=bgr_0_255)
        self._arrays = None

    def _open(self):
        if self._arrays is None:
            self._arrays = (np.load(self.root / "frames.npy", mmap_mode="r"),
                            np.load(self.root / "audio.npy", mmap_mode="r"))
        return self._arrays

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        frames, audio = self._open()
        row = int(self.rows[i])
        spec = torch.from_numpy(np.asarray(audio[row], dtype=np.float32))[None]   # (F, T) -> (1, F, T)
        seed = sample_seed(self.seed, self.epoch, i) if self.train else None
        return {"audio": spec, "video": self.transform(frames[row], seed), "label": self._labels[i]}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def labels(self) -> torch.Tensor:
        return self._labels

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        frames, audio = self._open()
        return {"audio": (1, *audio.shape[1:]), "video": (3, frames.shape[1], self.image_size, self.image_size)}


def cached_splits(root: str | Path | None, *, dataset: str, fold: str, seed: int, image_size: int = 224,
                  bgr_0_255: bool = False) -> DatasetSplits:
    """Train / val / test of ``fold`` from the cache of ``dataset`` at ``root``."""
    cache = open_cache(root, dataset=dataset)
    folds = cache.splits["folds"]
    if fold not in folds:
        raise ValueError(f"{dataset}: fold {fold!r} is not in the cache at {cache.root}; "
                         f"available folds: {', '.join(sorted(folds))}")
    by_clip = {r["clip"]: r for r in cache.index}
    names = cache.meta["class_names"]
    parts = {}
    for part in ("train", "val", "test"):
        missing = [c for c in folds[fold][part] if c not in by_clip]
        if missing:
            raise CacheError(f"{cache.root}: splits.json names {len(missing)} clips absent from index.csv "
                             f"(e.g. {missing[0]}); rebuild the cache with --force")
        rows = [by_clip[c]["row"] for c in folds[fold][part]]
        labels = [by_clip[c]["label"] for c in folds[fold][part]]
        parts[part] = CachedAVDataset(cache.root, rows, labels, class_names=names, train=part == "train",
                                      seed=seed, image_size=image_size, bgr_0_255=bgr_0_255)
    return DatasetSplits(**parts)
