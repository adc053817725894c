"""MMCosine (Xu et al., ICASSP 2023): multimodal cosine logits with a shared scale s.

logits_c = s * sum_m cos(z_m, W_{m,c}) with z_m and each class row of modality m's block of the
late linear fusion L2-normalised (no bias). Every modality's contribution is bounded by s, so
the dominant modality cannot win by growing its feature or weight norms.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmbal.balancers.base import Balancer, true_class_probability


def cosine_logits(z: torch.Tensor, weight: torch.Tensor, scaling: float) -> torch.Tensor:
    """s * cos between features (B, D) and class weights (C, D) -> (B, C)."""
    return scaling * F.normalize(z, dim=1) @ F.normalize(weight, dim=1).T


def _late_linear_fusions() -> tuple[type, ...]:
    """Fusions whose logits are sum_m parts[m](z_m) (+ bias): the ones MMCosine can normalise."""
    from mmbal.models import fusion

    return tuple(getattr(fusion, name) for name in ("ConcatFusion", "SumFusion") if hasattr(fusion, name))


class MMCosine(Balancer):
    """Replaces the fused logits by scaled cosine logits (forward hook, training and evaluation).

    It reuses the weights of the late linear fusion's per-modality blocks (``fusion.parts[m]``),
    so it needs a fusion whose parts are ``nn.Linear`` layers (``concat``).
    """

    def __init__(self, *, scaling: float = 10.0, acts_on: str = "gradient"):
        super().__init__(acts_on=acts_on)
        if not (isinstance(scaling, (int, float)) and math.isfinite(scaling) and scaling > 0):
            raise ValueError(f"mmcosine: scaling must be a finite number > 0, got {scaling!r}")
        self.scaling = float(scaling)
        self._per_modality: dict[str, torch.Tensor] = {}

    def setup(self, model, optimizer) -> None:
        parts = model.fusion.parts
        late = isinstance(model.fusion, _late_linear_fusions())
        if not late or any(m not in parts or not isinstance(parts[m], nn.Linear)
                           or parts[m].out_features != model.num_classes for m in model.modalities):
            raise ValueError(f"mmcosine needs a late linear fusion (concat or sum) whose per-modality "
                             f"parts map features to class logits; got {type(model.fusion).__name__}")
        super().setup(model, optimizer)

    def forward(self, model, inputs):
        tokens, features = model.encode(inputs)
        per = {m: cosine_logits(features[m], model.fusion.parts[m].weight, self.scaling)
               for m in model.modalities}                                          # (B, C) each
        logits = {"mm": sum(per.values())}
        logits.update(model.heads_logits(features))
        self._per_modality = {m: v.detach() for m, v in per.items()}
        return {"logits": logits, "features": features,
                "tokens": tokens if model.fusion.uses_tokens else None}

    def after_backward(self, model, outputs, labels):
        trace = {}
        for m, logits in self._per_modality.items():
            trace[f"score/{m}"] = true_class_probability(logits, labels)
            trace[f"cos/{m}"] = logits.gather(1, labels[:, None]).mean() / self.scaling
        return trace
