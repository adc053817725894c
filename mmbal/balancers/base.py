"""The balancer hook interface: every balancing method is a few optional hooks.

The trainer calls, per epoch, ``on_epoch_start``; per step, ``forward`` -> objective ->
``loss`` -> backward -> ``after_backward`` -> optimizer step. A gradient-modulation method
computes one coefficient k_m per modality and calls ``apply_coefficients``, which acts either on
the gradient (the paper's choice) or on the update (the learning rate of modality m's parameter
groups), so the intended change of pace also survives adaptive optimizers such as Adam.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mmbal.models.multimodal import ROLES

ACTS_ON = ("gradient", "update")


@dataclass
class EpochContext:
    """What a balancer may look at when an epoch starts."""

    epoch: int
    model: Any
    train_loader: Any
    device: torch.device
    history: list = field(default_factory=list)  # per-epoch records so far (val metrics, ...)


class Balancer:
    """No balancing; the base class of all balancers (all hooks are no-ops)."""

    scaled_roles: tuple[str, ...] = ROLES  # which of a modality's parameter groups k scales

    def __init__(self, *, acts_on: str = "gradient"):
        if acts_on not in ACTS_ON:
            raise ValueError(f"acts_on must be one of {ACTS_ON}, got {acts_on!r}")
        self.acts_on = acts_on
        self._grads_of: dict[str, list[torch.nn.Parameter]] = {}
        self._groups_of: dict[str, list[dict]] = {}

    # -- set-up ---------------------------------------------------------------------------
    def setup(self, model, optimizer) -> None:
        """Resolve, once, the parameters and optimizer groups each modality's k acts on."""
        self.modalities = model.modalities
        self._grads_of = model.modality_params(self.scaled_roles)
        self._groups_of = {m: [g for g in optimizer.param_groups
                               if g.get("modality") == m and g.get("role") in self.scaled_roles]
                           for m in model.modalities}

    # -- hooks ----------------------------------------------------------------------------
    def on_epoch_start(self, ctx: EpochContext) -> dict[str, float]:
        return {}

    def forward(self, model, inputs: dict[str, torch.Tensor]) -> dict:
        return model(inputs)

    def loss(self, outputs: dict, labels: torch.Tensor,
             losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return losses

    def after_backward(self, model, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    # -- acting on a modality's pace --------------------------------------------------------
    def apply_coefficients(self, coefficients: dict[str, torch.Tensor | float]) -> None:
        """Scale modality m's step by k_m: its gradients, or its groups' learning rates."""
        for m, k in coefficients.items():
            if self.acts_on == "gradient":
                grads = [p.grad for p in self._grads_of[m] if p.grad is not None]
                if grads:
                    torch._foreach_mul_(grads, k)
            else:
                for group in self._groups_of[m]:
                    group["lr_scale"] = float(k)


def check_known_modalities(where: str, names, model) -> None:
    """Fail before training when per-modality options name a modality the model does not have."""
    unknown = sorted(set(names) - set(model.modalities))
    if unknown:
        raise ValueError(f"{where} names unknown modalities {unknown}; the model has {list(model.modalities)}")


def mean_of_others(s: torch.Tensor) -> torch.Tensor:
    """(M,) -> (M,): entry i is the mean of s_j over j != i (a masked sum, no cancellation)."""
    n = s.shape[0]
    if n < 2:
        raise ValueError(f"balancing needs at least two modalities, got {n}")
    mask = 1.0 - torch.eye(n, dtype=s.dtype, device=s.device)     # (M, M), zero diagonal
    return (s[None, :] * mask).sum(1) / (n - 1)


def true_class_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch mean of softmax(logits)[y]: the confidence score s_m of paper §3.3 (detached)."""
    probs = torch.softmax(logits.detach().float(), dim=1)          # (B, C)
    return probs.gather(1, labels[:, None]).mean()                 # (B, 1) -> ()
