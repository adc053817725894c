"""MLB: multi-loss balanced gradient modulation (paper §3.3, k_i = 1 + tanh(alpha (r_i - 1))).

s_i is the batch-mean probability of the true class from modality i's unimodal head, and
r_i = mean_{m != i} s_m / s_i. The lagging modality (r_i > 1) is accelerated (k_i > 1), the
leading one slowed (k_i < 1); k -> 1 as all heads fit the data. With ``beta_max`` the
accelerating branch is k_i = 1 + (beta_max - 1) tanh(alpha (r_i - 1)) (the IJCV/README form).
"""
from __future__ import annotations

import torch

from mmbal.balancers.base import Balancer, true_class_probability

EPS = 1e-8


def mlb_ratios(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """r_i = mean of the other modalities' scores over s_i (scores clamped at 1e-8)."""
    names = list(scores)
    if len(names) < 2:
        raise ValueError(f"MLB needs at least two modalities, got {names}")
    s = torch.stack([torch.as_tensor(scores[m], dtype=torch.float32) for m in names]).clamp_min(EPS)  # (M,)
    others = (s.sum() - s) / (len(names) - 1)                      # (M,) mean of the others
    r = others / s
    return {m: r[i] for i, m in enumerate(names)}


def check_mlb_hyperparameters(alpha: float, beta_max: float | None) -> None:
    if not alpha >= 0:
        raise ValueError(f"mlb: alpha must be >= 0, got {alpha}")
    if beta_max is not None and not beta_max > 0:
        raise ValueError(f"mlb: beta_max must be > 0 (or None for the uncapped form), got {beta_max}")


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

    def __init__(self, *, alpha: float = 0.5, beta_max: float | None = None, acts_on: str = "gradient"):
        super().__init__(acts_on=acts_on)
        check_mlb_hyperparameters(alpha, beta_max)
        self.alpha, self.beta_max = alpha, beta_max

    def scores(self, model, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
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
