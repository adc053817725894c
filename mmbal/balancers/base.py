"""The balancer hooks: per epoch ``on_epoch_start`` (called by ``begin_epoch``, which keeps the modulation window
[start_epoch, end_epoch)); per step ``forward`` -> objective -> ``loss`` ->
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
    holdout_loader: Any = None   # the held-out part of the training set, for a balancer with ``holdout`` > 0


class Balancer:
    """No balancing; the base class of all balancers (its hooks change nothing). Subclasses take
    their own options and pass ``**base`` (``acts_on``, ``start_epoch``, ``end_epoch``) on to it."""
    scaled_roles: tuple[str, ...] = ROLES  # which of a modality's parameter groups k scales
    objective = "joint"                    # the objective the method is defined with in its paper
    acts_on_choices = ACTS_ON
    stateful: tuple[str, ...] = ()         # attributes a checkpoint saves (running means, prototypes, histories)
    holdout: float = 0.0                   # fraction of the training set the trainer keeps out of training for it

    def __init__(self, *, acts_on: str = "gradient", start_epoch: int = 0, end_epoch: int | None = None):
        name = type(self).__name__
        require(acts_on in self.acts_on_choices, f"{name}: acts_on must be one of {self.acts_on_choices}, "
                f"got {acts_on!r}")
        require(type(start_epoch) is int and start_epoch >= 0 and (end_epoch is None or (type(end_epoch) is int and
                end_epoch > start_epoch)), f"{name}: the modulation window needs integers 0 <= start_epoch < end_epoch "
                f"(end_epoch None: to the last epoch), got start_epoch={start_epoch!r}, end_epoch={end_epoch!r}")
        self.acts_on, self.start_epoch, self.end_epoch, self.epoch = acts_on, start_epoch, end_epoch, 0
        self._trace: dict[str, torch.Tensor] = {}   # what a forward or loss hook left for after_backward

    def setup(self, model, optimizer) -> None:
        """Resolve, once, the parameters and optimizer groups each modality's k acts on."""
        self.modalities = model.modalities
        self._grads_of = model.modality_params(self.scaled_roles)
        self._groups_of = {m: [g for g in optimizer.param_groups
                               if g.get("modality") == m and g.get("role") in self.scaled_roles]
                           for m in model.modalities}

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("epoch", *self.stateful) if hasattr(self, name)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def begin_epoch(self, ctx: EpochContext) -> dict[str, float]:
        """What the trainer calls when an epoch starts (not overridden): note the epoch, run ``on_epoch_start``;
        a windowed balancer's epoch record says whether it modulates (``window`` 1) or not (0)."""
        self.epoch = ctx.epoch
        has_window = self.start_epoch > 0 or self.end_epoch is not None
        return self.on_epoch_start(ctx) | ({"window": float(self.active)} if has_window else {})

    @property
    def active(self) -> bool:
        """Whether the current epoch lies in the modulation window [start_epoch, end_epoch)."""
        return self.start_epoch <= self.epoch and (self.end_epoch is None or self.epoch < self.end_epoch)

    def windowed(self, coefficients: dict) -> dict:
        """k_m inside the modulation window, exactly 1 outside it (the authors' codes modulate only inside)."""
        return coefficients if self.active else {m: torch.ones_like(torch.as_tensor(k, dtype=torch.float32))
                                                  for m, k in coefficients.items()}          # on k's device

    def on_epoch_start(self, ctx: EpochContext) -> dict[str, float]:
        return {}

    def forward(self, model, inputs: dict[str, torch.Tensor]) -> dict:
        return model(inputs)

    def loss(self, outputs: dict, labels: torch.Tensor, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return losses

    def after_backward(self, model, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._trace

    def apply_coefficients(self, coefficients: dict[str, torch.Tensor | float]) -> dict:
        """Scale modality m's step by k_m (1 outside the window): its gradients, or its groups' learning rates.
        Returns the coefficients applied (for the trace)."""
        coefficients = self.windowed(coefficients)
        for m, k in coefficients.items():
            if self.acts_on == "update":
                for group in self._groups_of[m]:
                    group["lr_scale"] = float(k)
            elif self.active and (grads := [p.grad for p in self._grads_of[m] if p.grad is not None]):
                torch._foreach_mul_(grads, k)
        return coefficients


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
    """Batch mean of softmax(logits)[y]: the confidence score s_m of MLB (Kontras et al., BMVC 2024) (detached; over the global
    batch under data parallelism)."""
    probs = torch.softmax(logits.detach().float(), dim=1)          # (B, C)
    return global_mean(probs.gather(1, labels[:, None]).mean(), len(labels))   # (B, 1) -> ()
