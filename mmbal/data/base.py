"""The batch contract every dataset follows, and the dataset registry.

A sample is a dict keyed by modality name plus ``"label"``:
``{"audio": (1, F, T) float, "video": (C, T, H, W) float, "label": () long}``;
a DataLoader batch adds the leading batch dimension B.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mmbal.distributed import rank, world_size
from mmbal.registry import Registry

DATASETS = Registry("dataset")


class MultimodalDataset(Dataset):
    """Base class of one split: subclasses set ``modalities``, ``num_classes`` and ``class_names`` and implement
    ``__len__`` / ``__getitem__`` returning the sample dict described in the module docstring."""

    modalities: tuple[str, ...] = ("audio", "video")
    num_classes: int
    class_names: list[str]
    epoch: int = 0

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample tensor shape of each modality (no batch dimension)."""
        sample = self[0]
        return {m: tuple(sample[m].shape) for m in self.modalities}

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each training epoch (re-pairing, seeded augmentation, batch order)."""
        self.epoch = int(epoch)

    def labels(self) -> torch.Tensor:
        """All labels of the split, shape (N,). Subclasses may override with a faster version."""
        return torch.stack([torch.as_tensor(self[i]["label"]) for i in range(len(self))])


@dataclass
class DatasetSplits:
    """The train / val / test splits of one dataset, built with one seed (and fold)."""

    train: MultimodalDataset
    val: MultimodalDataset
    test: MultimodalDataset

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.train.modalities

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.train.input_shapes()

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


class SubsetSplit(MultimodalDataset):
    """Rows ``index`` of a split; ``set_epoch`` reaches the parent (its re-pairing and augmentation)."""

    def __init__(self, parent: MultimodalDataset, index: list[int]):
        self.parent, self.index = parent, index
        self.modalities, self.num_classes, self.class_names = parent.modalities, parent.num_classes, parent.class_names

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        return self.parent[self.index[i]]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.parent.set_epoch(epoch)


def holdout_split(splits: DatasetSplits, fraction: float, seed: int) -> tuple[DatasetSplits, SubsetSplit | None]:
    """(splits whose train keeps 1 - ``fraction`` of the training set, the held-out rest), drawn by ``seed``."""
    if not fraction:
        return splits, None
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed)).tolist()
    n = max(1, round(fraction * len(order)))
    parts = (SubsetSplit(splits.train, sorted(rows)) for rows in (order[n:], order[:n]))
    return DatasetSplits(next(parts), splits.val, splits.test), next(parts)


class EpochSampler(Sampler[int]):
    """Epoch e's order from (seed, e) alone (e from ``set_epoch``), whatever the worker count or a dropped iterator.
    It replays the committed results' single-process ``DataLoader(shuffle=True, generator=Generator(seed))`` stream:
    per epoch two base-seed draws, the order's randperm and a trailing one (resuming from the last epoch served)."""

    def __init__(self, dataset: MultimodalDataset, seed: int):
        self.dataset, self._start = dataset, (0, torch.Generator().manual_seed(seed).get_state())
        self._replayed = self._start                                         # (epochs consumed, generator state)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        epoch, n = getattr(self.dataset, "epoch", 0), len(self.dataset)
        done, state = self._replayed if self._replayed[0] <= epoch else self._start
        g = torch.Generator()
        g.set_state(state)
        for _ in range(epoch - done + 1):
            torch.empty(2, dtype=torch.int64).random_(generator=g)      # the loader's two base-seed draws
            order = torch.randperm(n, generator=g)                       # (n,) this epoch's order
            torch.randperm(n, generator=g)                               # the sampler's trailing draw
        self._replayed = (epoch + 1, g.get_state())
        return iter(order.tolist())


class EpochBatches(Sampler[list[int]]):
    """Global batches of ``batch_size`` in EpochSampler's order, this rank's contiguous share of each (one process
    with batch B and n ranks with B/n train on the same global batches); a last global batch smaller than the world
    is dropped. ``skip`` leaves out the first batches of the next epoch served (a run resumed mid-epoch)."""

    def __init__(self, dataset: MultimodalDataset, *, batch_size: int, seed: int):
        self.order, self.batch_size, self.skip = EpochSampler(dataset, seed), batch_size, 0
        self.rank, self.world = rank(), world_size()

    def __len__(self) -> int:
        full, rest = divmod(len(self.order), self.batch_size)
        return full + (rest >= self.world)             # rest 0 adds nothing: world >= 1

    def __iter__(self):
        order, (skip, self.skip) = list(self.order), (self.skip, 0)
        for start in range(skip * self.batch_size, len(order), self.batch_size):
            if len(chunk := order[start:start + self.batch_size]) >= self.world:
                yield np.array_split(chunk, self.world)[self.rank].tolist()


def make_loader(dataset: MultimodalDataset, *, batch_size: int, shuffle: bool, seed: int,
                num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A seeded DataLoader whose batches depend on (seed, epoch) only, whatever ``num_workers``. Workers are not
    persistent: each epoch's workers copy the dataset after ``set_epoch``, so re-pairing and seeded augmentation
    reach them; a sample's randomness must come from (seed, epoch, index), never from a worker's RNG stream.
    Shuffled (training) loaders serve this rank's share of each global batch of ``batch_size`` (EpochBatches)."""
    batches = {"batch_sampler": EpochBatches(dataset, batch_size=batch_size, seed=seed)} if shuffle else \
        {"batch_size": batch_size}
    return DataLoader(dataset, **batches, generator=torch.Generator().manual_seed(seed), num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=False)
