"""AGM (Li et al., ICCV 2023): k_m = exp(alpha min(r*_m - r_m, 10)) scales the gradient into phi_m,
modality m's Shapley output (sum_m phi_m = fused logits). Coalitions zero the absent modalities'
*features* and re-run only the fusion (AGM zeroes the raw inputs and re-runs the encoders)."""
from __future__ import annotations

import math
from itertools import combinations

import torch

from mmbal.balancers.base import BALANCERS, Balancer, mean_of_others, require, trace_of

SCORE_FLOOR = 1e-8
MAX_EXPONENT = 10.0
MAX_ALPHA = 8.0


class ScaleGrad(torch.autograd.Function):
    """``ScaleGrad.apply(x, k)``: x in the forward pass, k * dL/dx in the backward pass (k a detached tensor)."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(k)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (k,) = ctx.saved_tensors
        return grad * k.to(grad.dtype), None


def coalition_logits(fusion, features: dict, tokens: dict | None, *, full: torch.Tensor | None = None
                     ) -> dict[frozenset, torch.Tensor]:
    """Fused logits with the features (and tokens) of absent modalities set to zero, one batched call."""
    names = tuple(fusion.modalities)
    sizes = range(len(names) + (full is None))          # every subset, smallest first (the full one if not given)
    wanted = [frozenset(c) for size in sizes for c in combinations(names, size)]
    b = next(iter(features.values())).shape[0]

    def stacked(source):                    # (B, ...) per modality -> (K*B, ...) with zeros
        return {m: torch.cat([x if m in c else torch.zeros_like(x) for c in wanted]) for m, x in source.items()}

    was_training = fusion.training
    fusion.eval()                           # AGM runs its coalition passes in eval mode
    try:
        out = fusion(stacked(features), None if tokens is None else stacked(tokens))  # (K*B, C)
    finally:
        fusion.train(was_training)
    values = dict(zip(wanted, out.split(b)))
    if full is not None:
        values[frozenset(names)] = full
    return values


def shapley_outputs(values: dict[frozenset, torch.Tensor], names) -> dict[str, torch.Tensor]:
    """phi_m = f(empty)/M + sum_S |S|!(M-|S|-1)!/M! (f(S + m) - f(S)), S over subsets without m."""
    n = len(names)
    empty = values[frozenset()]
    phi = {}
    for m in names:
        others = [o for o in names if o != m]
        total = empty / n
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for c in combinations(others, size):
                s = frozenset(c)
                total = total + weight * (values[s | {m}] - values[s])
        phi[m] = total
    return phi


def agm_scores(phi: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """s_m = batch mean of -log softmax(phi_m)[y], the probability clamped at 1e-8 (detached)."""
    probs = {m: torch.softmax(v.detach().float(), dim=1).gather(1, labels[:, None]) for m, v in phi.items()}  # (B, 1)
    return {m: -torch.log(p.clamp_min(SCORE_FLOOR)).mean() for m, p in probs.items()}


def agm_ratios(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """r_m = exp(mean_{j != m} s_j - s_m); for two modalities r_a = exp(s_v - s_a)."""
    s = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in scores.values()])   # (M,)
    return dict(zip(scores, torch.exp(mean_of_others(s) - s)))                        # (M,)


def agm_coefficients(ratios: dict, targets: dict, alpha: float) -> dict[str, torch.Tensor]:
    """k_m = exp(alpha * min(r*_m - r_m, 10))."""
    return {m: torch.exp(alpha * torch.clamp(targets[m] - ratios[m], max=MAX_EXPONENT)) for m in ratios}


@BALANCERS.register("agm")
class AGM(Balancer):
    """AGM: k_m = exp(alpha (r*_m - r_m)) on the gradients of Shapley modality outputs."""

    acts_on_choices = ("gradient",)   # a Shapley output has no optimizer group of its own

    def __init__(self, *, alpha: float = 1.5, **base):
        super().__init__(**base)
        require(isinstance(alpha, (int, float)) and 0 <= alpha <= MAX_ALPHA,
                f"agm: alpha must be in [0, {MAX_ALPHA}] (k can reach exp(10 alpha), which overflows "
                f"float32 beyond that), got {alpha!r}")
        self.alpha = alpha
        self.steps = 0
        self.running: torch.Tensor | None = None   # running means of s_m, in model.modalities order
        self._trace: dict[str, torch.Tensor] = {}

    def forward(self, model, inputs):
        outputs = model(inputs)
        if not model.training:
            return outputs                         # evaluation: the plain fused prediction
        names = model.modalities
        values = coalition_logits(model.fusion, outputs["features"], outputs.get("tokens"),
                                  full=outputs["logits"]["mm"])
        phi = shapley_outputs(values, names)
        labels = inputs["label"]
        scores = agm_scores(phi, labels)
        current = torch.stack([scores[m] for m in names])                        # (M,)
        if self.running is None:
            self.running = torch.zeros_like(current)
        ratios = agm_ratios(scores)
        targets = agm_ratios(dict(zip(names, self.running)))
        coeffs = agm_coefficients(ratios, targets, self.alpha)
        self.steps += 1                            # running mean over every step so far
        self.running = self.running + (current - self.running) / self.steps
        outputs["logits"]["mm"] = sum(ScaleGrad.apply(phi[m], coeffs[m].detach()) for m in names)  # (B, C)
        self._trace = trace_of(names, score=scores, ratio=ratios, target=targets, coeff=coeffs)
        return outputs

    def after_backward(self, model, outputs, labels):
        return self._trace
