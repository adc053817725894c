"""An in-memory multimodal split: every modality is one preallocated tensor, indexing is free."""
from __future__ import annotations

import torch

from mmbal.data.base import MultimodalDataset


def check_option(dataset: str, ok: bool, knob: str, valid: str, value: object) -> None:
    """Raise ``ValueError("<dataset>: <knob> must be <valid>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{dataset}: {knob} must be {valid}, got {value!r}")


class TensorSplit(MultimodalDataset):
    """One split held as tensors: ``inputs[m]`` is (N, ...) per modality, ``targets`` is (N,)."""

    def __init__(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor, *, class_names: list[str]):
        for m, x in inputs.items():
            if len(x) != len(targets):
                raise ValueError(f"modality {m!r} has {len(x)} samples but there are {len(targets)} labels")
        self.inputs, self.targets, self.modalities = inputs, targets.long(), tuple(inputs)
        self.class_names, self.num_classes = list(class_names), len(class_names)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**{m: x[i] for m, x in self.inputs.items()}, "label": self.targets[i]}

    def labels(self) -> torch.Tensor:
        return self.targets
