"""The balancer hooks: per epoch ``on_epoch_start``; per step ``forward`` -> objective -> ``loss`` ->
backward -> ``after_backward``. ``apply_coefficients`` scales modality m's step by k_m on the gradient
(the paper's choice) or on the update (its groups' learning rates, so the pace also changes under Adam)."""
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from mmbal.distributed import global_mean
from mmbal.models.multimodal import ROLES
from mmbal.registry import Registry

ACTS_ON = ("gradient", "update")
BALANCERS = Registry("balancer")


@dataclass
class EpochContext:
    """What a balancer may look at when an epoch starts."""
    epoch: int
    model: Any
    train_loader: Any
    device: torch.device
    history: list = field(default_factory=list)  # per-epoch records so far (val metrics, ...)


class Balancer:
    """No balancing; the base class of all balancers (its hooks change nothing). Subclasses take
    their own options and pass ``**base`` (``acts_on``) on to it."""
    scaled_roles: tuple[str, ...] = ROLES  # which of a modality's parameter groups k scales
    objective = "joint"                    # the objective the method is defined with in its paper
    acts_on_choices = ACTS_ON
    stateful: tuple[str, ...] = ()         # attributes a checkpoint saves (running means, prototypes, histories)

    def __init__(self, *, acts_on: str = "gradient"):
        require(acts_on in self.acts_on_choices,
                f"{type(self).__name__}: acts_on must be one of {self.acts_on_choices}, got {acts_on!r}")
        self.acts_on = acts_on
        self._trace: dict[str, torch.Tensor] = {}   # what a forward or loss hook left for after_backward

    def setup(self, model, optimizer) -> None:
        """Resolve, once, the parameters and optimizer groups each modality's k acts on."""
        self.modalities = model.modalities
        self._grads_of = model.modality_params(self.scaled_roles)
        self._groups_of = {m: [g for g in optimizer.param_groups
                               if g.get("modality") == m and g.get("role") in self.scaled_roles]
                           for m in model.modalities}

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.stateful if hasattr(self, name)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def on_epoch_start(self, ctx: EpochContext) -> dict[str, float]:
        return {}

    def forward(self, model, inputs: dict[str, torch.Tensor]) -> dict:
        return model(inputs)

    def loss(self, outputs: dict, labels: torch.Tensor, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return losses

    def after_backward(self, model, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._trace

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


@BALANCERS.register("none")
class NoBalancer(Balancer):
    """No balancing (plain training under the chosen objective); traces the heads' scores s_m."""

    def after_backward(self, model, outputs, labels):
        return {f"score/{m}": true_class_probability(outputs["logits"][m], labels) for m in model.modalities}


def require(ok: bool, message: str) -> None:
    """Raise ValueError(message) unless ``ok`` (the hyperparameter checks of every balancer)."""
    if not ok:
        raise ValueError(message)


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def stacked_scores(scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """{modality: scalar score} -> (M,) float32 tensor, floored at 1e-8 (no division by zero)."""
    return torch.stack([torch.as_tensor(s, dtype=torch.float32) for s in scores.values()]).clamp_min(1e-8)


def trace_of(names, **series: dict) -> dict[str, torch.Tensor]:
    """{"<quantity>/<modality>": value}, modality by modality (the per-step trace of a balancer)."""
    return {f"{key}/{m}": values[m] for m in names for key, values in series.items()}


def check_known_modalities(where: str, names, model) -> None:
    """Fail before training when per-modality options name a modality the model does not have."""
    unknown = sorted(set(names) - set(model.modalities))
    require(not unknown, f"{where} names unknown modalities {unknown}; the model has {list(model.modalities)}")


def mean_of_others(s: torch.Tensor) -> torch.Tensor:
    """(M,) -> (M,): entry i is the mean of s_j over j != i (a masked sum, no cancellation)."""
    n = s.shape[0]
    require(n >= 2, f"balancing needs at least two modalities, got {n}")
    mask = 1.0 - torch.eye(n, dtype=s.dtype, device=s.device)     # (M, M), zero diagonal
    return (s[None, :] * mask).sum(1) / (n - 1)


def true_class_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch mean of softmax(logits)[y]: the confidence score s_m of paper §3.3 (detached; over the global
    batch under data parallelism)."""
    probs = torch.softmax(logits.detach().float(), dim=1)          # (B, C)
    return global_mean(probs.gather(1, labels[:, None]).mean(), len(labels))   # (B, 1) -> ()
