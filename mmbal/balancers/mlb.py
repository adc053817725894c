"""MLB: multi-loss balanced gradient modulation (paper §3.3, k_i = 1 + tanh(alpha (r_i - 1))).

s_i is the batch-mean probability of the true class from modality i's unimodal head, and
r_i = mean_{m != i} s_m / s_i. The lagging modality (r_i > 1) is accelerated (k_i > 1), the
leading one slowed (k_i < 1); k -> 1 as all heads fit the data. With ``beta_max`` the
accelerating branch is k_i = 1 + (beta_max - 1) tanh(alpha (r_i - 1)) (the IJCV/README form).

Ablation variants of the paper's code (paper.md §2.3), chosen with ``variant``:
``"heads"`` (the method: unimodal heads trained by the multi-loss objective), ``"stopgrad"``
(the heads see detached features, so unimodal losses train the heads only, ``--cls
linear_stopgrad``) and ``"fused"`` (scores from the split fused linear head, as OGM does, with
no unimodal losses, ``--cls linear_ogm``).
"""
from __future__ import annotations

import math

import torch

from mmbal.balancers.base import Balancer, check_known_modalities, true_class_probability
from mmbal.models.multimodal import ROLES

EPS = 1e-8
VARIANTS = ("heads", "stopgrad", "fused")
VARIANT_OBJECTIVE = {"heads": "multi_loss", "stopgrad": "multi_loss", "fused": "joint"}


def mlb_ratios(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """r_i = mean_{j != i} s_j / s_i, computed as the mean of s_j / s_i (exactly 1 at equal scores)."""
    names = list(scores)
    if len(names) < 2:
        raise ValueError(f"MLB needs at least two modalities, got {names}")
    s = torch.stack([torch.as_tensor(scores[m], dtype=torch.float32) for m in names]).clamp_min(EPS)  # (M,)
    pairwise = s[None, :] / s[:, None]                             # (M, M): [i, j] = s_j / s_i
    off_diagonal = 1.0 - torch.eye(len(names), device=s.device)    # (M, M)
    r = (pairwise * off_diagonal).sum(1) / (len(names) - 1)        # (M,)
    return {m: r[i] for i, m in enumerate(names)}


def check_mlb_hyperparameters(alpha: float, beta_max: float | None) -> None:
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"mlb: alpha must be a finite number >= 0, got {alpha!r}")
    if beta_max is not None and not (isinstance(beta_max, (int, float)) and math.isfinite(beta_max)
                                     and beta_max > 0):
        raise ValueError(f"mlb: beta_max must be a finite number > 0 (or None for the uncapped "
                         f"form), got {beta_max!r}")


def coefficients_from_ratios(ratios: dict[str, torch.Tensor], alpha: float,
                             beta_max: float | None = None) -> dict[str, torch.Tensor]:
    """k_i = 1 + tanh(alpha (r_i - 1)); with beta_max, 1 + (beta_max - 1) tanh(...) when r_i > 1."""
    out = {}
    for m, r in ratios.items():
        t = torch.tanh(alpha * (r - 1.0))
        out[m] = 1.0 + t if beta_max is None else torch.where(r > 1.0, 1.0 + (beta_max - 1.0) * t, 1.0 + t)
    return out


def mlb_coefficients(scores: dict[str, torch.Tensor], alpha: float,
                     beta_max: float | None = None) -> dict[str, torch.Tensor]:
    """MLB's per-modality coefficients k_m from the scores s_m (dict modality -> scalar tensor)."""
    check_mlb_hyperparameters(alpha, beta_max)
    return coefficients_from_ratios(mlb_ratios(scores), alpha, beta_max)


class MLB(Balancer):
    """Scales encoder m, head m and fusion part m of every modality by k_m after backward."""

    def __init__(self, *, alpha: float = 0.5, beta_max: float | None = None, variant: str = "heads",
                 acts_on: str = "gradient"):
        super().__init__(acts_on=acts_on)
        check_mlb_hyperparameters(alpha, beta_max)
        if variant not in VARIANTS:
            raise ValueError(f"mlb: unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
        self.alpha, self.beta_max, self.variant = alpha, beta_max, variant
        # With scores from the fused head, the unimodal heads are only probes: leave them alone.
        self.scaled_roles = ("encoder", "fusion") if variant == "fused" else ROLES

    def setup(self, model, optimizer) -> None:
        super().setup(model, optimizer)
        if self.variant == "stopgrad":
            model.detach_heads = True   # unimodal CE trains the heads, never the encoders

    def scores(self, model, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.variant == "fused":
            with torch.no_grad():
                split = model.fusion.unimodal_logits(outputs["features"], outputs.get("tokens"))
            return {m: true_class_probability(split[m], labels) for m in model.modalities}
        return {m: true_class_probability(outputs["logits"][m], labels) for m in model.modalities}

    def after_backward(self, model, outputs, labels):
        scores = self.scores(model, outputs, labels)
        ratios = mlb_ratios(scores)
        coeffs = coefficients_from_ratios(ratios, self.alpha, self.beta_max)
        self.apply_coefficients(coeffs)
        trace = {}
        for m in model.modalities:
            trace[f"score/{m}"], trace[f"ratio/{m}"], trace[f"coeff/{m}"] = scores[m], ratios[m], coeffs[m]
        return trace


class FixedCoefficients(Balancer):
    """Constant k_m per modality (the "fixed-k" control of MLB): same hook, no adaptation."""

    def __init__(self, *, coefficients: dict[str, float], acts_on: str = "gradient"):
        super().__init__(acts_on=acts_on)
        if not isinstance(coefficients, dict) or not coefficients:
            raise ValueError(f"fixed: coefficients must be a dict modality -> k, e.g. "
                             f"{{'audio': 0.8, 'video': 1.5}}, got {coefficients!r}")
        bad = {m: k for m, k in coefficients.items()
               if not (isinstance(k, (int, float)) and math.isfinite(k) and k >= 0)}
        if bad:
            raise ValueError(f"fixed: every coefficient must be a finite number >= 0, got {bad}")
        self.coefficients = {m: float(k) for m, k in coefficients.items()}

    def setup(self, model, optimizer) -> None:
        check_known_modalities("fixed: coefficients", self.coefficients, model)
        super().setup(model, optimizer)
        self._k = {m: self.coefficients.get(m, 1.0) for m in model.modalities}
        self._k_trace = {m: torch.tensor(k) for m, k in self._k.items()}

    def after_backward(self, model, outputs, labels):
        self.apply_coefficients(self._k)
        trace = {f"score/{m}": true_class_probability(outputs["logits"][m], labels) for m in model.modalities}
        trace.update({f"coeff/{m}": self._k_trace[m] for m in model.modalities})
        return trace
