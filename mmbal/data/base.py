"""The batch contract every dataset follows, and the dataset registry.

A sample is a dict keyed by modality name plus ``"label"``:
``{"audio": (1, F, T) float, "video": (C, T, H, W) float, "label": () long}``;
a DataLoader batch adds the leading batch dimension B.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from mmbal.registry import Registry

DATASETS = Registry("dataset")


class MultimodalDataset(Dataset):
    """Base class of one split of a multimodal dataset.

    Subclasses set ``modalities``, ``num_classes`` and ``class_names`` and implement
    ``__len__`` / ``__getitem__`` returning the sample dict described in the module docstring.
    """

    modalities: tuple[str, ...] = ("audio", "video")
    num_classes: int
    class_names: list[str]

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample tensor shape of each modality (no batch dimension)."""
        sample = self[0]
        return {m: tuple(sample[m].shape) for m in self.modalities}

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each training epoch (re-pairing, seeded augmentation)."""

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


def make_loader(dataset: MultimodalDataset, *, batch_size: int, shuffle: bool, seed: int,
                num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A seeded DataLoader: the same seed gives the same batch order.

    Workers are not persistent: each epoch's workers copy the dataset after ``set_epoch``, so
    per-epoch re-pairing and seeded augmentation reach them.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, pin_memory=pin_memory, drop_last=False,
                      persistent_workers=False)
