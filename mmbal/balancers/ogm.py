"""OGM and OGM-GE (Peng et al., CVPR 2022): on-the-fly gradient modulation, deceleration only.

Scores come from each modality's share of the fused linear head (``fusion.unimodal_logits``):
s_m = sum_batch softmax[y]; rho_m = s_m / mean of the others' scores;
k_m = 1 - tanh(alpha * rho_m) if rho_m > 1 else 1 (paper Eq. 10, as in the official code: no
"- 1" inside tanh). OGM-GE adds Gaussian noise N(0, std(grad)) to the encoders' weight gradients.
"""
from __future__ import annotations

import torch

from mmbal.balancers.base import Balancer, mean_of_others


def ogm_coefficients(scores: dict[str, torch.Tensor], alpha: float) -> tuple[dict, dict]:
    """(rho_m, k_m) per modality; only a dominant modality (rho_m > 1) gets k_m < 1."""
    names = list(scores)
    s = torch.stack([torch.as_tensor(scores[m], dtype=torch.float32) for m in names]).clamp_min(1e-8)  # (M,)
    rho = s / mean_of_others(s)                                    # (M,)
    k = torch.where(rho > 1.0, 1.0 - torch.tanh(alpha * torch.relu(rho)), torch.ones_like(rho))
    return ({m: rho[i] for i, m in enumerate(names)}, {m: k[i] for i, m in enumerate(names)})


class OGM(Balancer):
    """Decelerates the dominant modality's encoder; ``noise=True`` gives OGM-GE."""

    scaled_roles = ("encoder",)

    def __init__(self, *, alpha: float = 0.8, noise: bool = False, acts_on: str = "gradient"):
        super().__init__(acts_on=acts_on)
        if not alpha >= 0:
            raise ValueError(f"ogm: alpha must be >= 0, got {alpha}")
        self.alpha, self.noise = alpha, noise

    def after_backward(self, model, outputs, labels):
        with torch.no_grad():
            split = model.fusion.unimodal_logits(outputs["features"], outputs.get("tokens"))
            scores = {m: torch.softmax(split[m].float(), 1).gather(1, labels[:, None]).sum()
                      for m in model.modalities}
        rho, coeffs = ogm_coefficients(scores, self.alpha)
        if self.noise:
            self._scale_with_noise(coeffs)
        else:
            self.apply_coefficients(coeffs)
        trace = {}
        for m in model.modalities:
            trace[f"score/{m}"], trace[f"ratio/{m}"], trace[f"coeff/{m}"] = scores[m], rho[m], coeffs[m]
        return trace

    def _scale_with_noise(self, coeffs) -> None:
        """OGM-GE: g <- k g + N(0, std(g)) on weight tensors (noise scale from the unscaled g)."""
        stds = {m: [p.grad.std() if p.grad.dim() > 1 and p.grad.numel() > 1 else None
                    for p in self._grads_of[m] if p.grad is not None] for m in coeffs}
        self.apply_coefficients(coeffs)
        for m in coeffs:
            grads = [p.grad for p in self._grads_of[m] if p.grad is not None]
            for g, std in zip(grads, stds[m]):
                if std is not None:
                    g.add_(torch.randn_like(g) * (std + 1e-8))
