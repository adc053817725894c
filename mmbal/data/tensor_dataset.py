"""An in-memory multimodal split: every modality is one preallocated tensor, indexing is free."""
from __future__ import annotations

import torch

from mmbal.data.base import MultimodalDataset


class TensorSplit(MultimodalDataset):
    """One split held as tensors: ``inputs[m]`` is (N, ...) per modality, ``targets`` is (N,)."""

    def __init__(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor, *,
                 class_names: list[str]):
        n = len(targets)
        for m, x in inputs.items():
            if len(x) != n:
                raise ValueError(f"modality {m!r} has {len(x)} samples but there are {n} labels")
        self.inputs = inputs
        self.targets = targets.long()
        self.modalities = tuple(inputs)
        self.class_names = list(class_names)
        self.num_classes = len(class_names)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = {m: x[i] for m, x in self.inputs.items()}
        sample["label"] = self.targets[i]
        return sample

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(x.shape[1:]) for m, x in self.inputs.items()}

    def labels(self) -> torch.Tensor:
        return self.targets
