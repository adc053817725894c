"""An in-memory multimodal split: every modality is one preallocated tensor, indexing is free."""
from __future__ import annotations

import torch

from mmbal.data.base import DATASETS, DatasetSplits, MultimodalDataset


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


@DATASETS.register("random_tensors")
def random_tensors(*, seed: int, root: str | None = None, shapes: dict, sizes=(64, 16, 16),
                   num_classes: int = 2) -> DatasetSplits:
    """Standard-normal inputs of per-modality ``shapes`` with random labels: a table's tensors without its data
    (timing only: ``mmbal table estimate``, bench/gpu_step.py)."""
    g, names = torch.Generator().manual_seed(seed), [str(c) for c in range(num_classes)]
    return DatasetSplits(*(TensorSplit({m: torch.randn(n, *shape, generator=g) for m, shape in shapes.items()},
                                       torch.randint(num_classes, (n,), generator=g), class_names=names) for n in sizes))
