"""OGM and OGM-GE (Peng et al., CVPR 2022), deceleration only: s_m = sum_batch softmax[y] of modality m's
share of the fused head, rho_m = s_m / mean of the others', k_m = 1 - tanh(alpha rho_m) if rho_m > 1 else 1
(Eq. 10 as in the official code). OGM-GE adds noise N(0, std(grad)) to the encoders' weight gradients. Both act
only in the window [start_epoch, end_epoch) (the OGM-GE code: epochs 0 to 50 inclusive; the MLB code: always)."""
import torch

from mmbal.balancers.base import (BALANCERS, Balancer, finite, mean_of_others, require, stacked_scores, trace_of)
from mmbal.distributed import global_sum


def ogm_coefficients(scores: dict[str, torch.Tensor], alpha: float) -> tuple[dict, dict]:
    """(rho_m, k_m) per modality; only a dominant modality (rho_m > 1) gets k_m < 1."""
    s = stacked_scores(scores)                                     # (M,)
    rho = s / mean_of_others(s)                                    # (M,)
    k = torch.where(rho > 1.0, 1.0 - torch.tanh(alpha * torch.relu(rho)), torch.ones_like(rho))
    return dict(zip(scores, rho)), dict(zip(scores, k))


@BALANCERS.register("ogm")
class OGM(Balancer):
    """OGM: slow the dominant modality's encoder by 1 - tanh(alpha * rho) (fused-head scores)."""
    scaled_roles = ("encoder",)
    noise = False

    def __init__(self, *, alpha: float = 0.8, **base):
        super().__init__(**base)
        require(finite(alpha) and alpha >= 0, f"ogm: alpha must be a finite number >= 0, got {alpha!r}")
        self.alpha = alpha

    def after_backward(self, model, outputs, labels):
        with torch.no_grad():
            split = model.fusion.unimodal_logits(outputs["features"], outputs.get("tokens"))
            scores = {m: global_sum(torch.softmax(split[m].float(), 1).gather(1, labels[:, None]).sum())
                      for m in model.modalities}
        rho, coeffs = ogm_coefficients(scores, self.alpha)
        # OGM-GE: g <- k g + N(0, std(g)) on weight tensors (noise scale from the unscaled g), inside the window only
        stds = {m: [p.grad.std() if p.grad.dim() > 1 and p.grad.numel() > 1 else None for p in self._grads_of[m]
                    if p.grad is not None] for m in coeffs} if self.noise and self.active else {}
        coeffs = self.apply_coefficients(coeffs)
        for m, noise_stds in stds.items():
            for g, std in zip([p.grad for p in self._grads_of[m] if p.grad is not None], noise_stds):
                if std is not None:
                    g.add_(torch.randn_like(g) * (std + 1e-8))
        return trace_of(model.modalities, score=scores, ratio=rho, coeff=coeffs)


@BALANCERS.register("ogm_ge")
class OGMGE(OGM):
    """OGM-GE: OGM plus Gaussian gradient noise with the gradient's own std (generalisation)."""
    noise = True
