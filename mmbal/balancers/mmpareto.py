"""MMPareto (Wei & Hu, ICML 2024): per encoder m, the gradients of the multimodal loss g_mm and of m's unimodal
loss g_u; when they conflict (cos <= 0) the min-norm (MGDA) weights of Pareto integration, otherwise (1/2, 1/2);
the step 2 (w g_mm + (1 - w) g_u) rescaled per tensor up to the norm of g_mm + g_u, times gamma (the authors' code)."""
import torch

from mmbal.balancers.base import BALANCERS, Balancer, finite, require, trace_of
from mmbal.distributed import global_mean


def min_norm_weight(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """w in [0, 1] minimising |w a + (1 - w) b|^2 (two-task MGDA): w = clamp((b - a).b / |a - b|^2, 0, 1)."""
    diff = a - b
    return ((-diff @ b) / (diff @ diff).clamp_min(1e-20)).clamp(0.0, 1.0)


def pareto_weight(g_mm: torch.Tensor, g_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos(g_mm, g_u), weight of g_mm): 1/2 when the flat gradients agree (cos > 0), else the min-norm weight."""
    cos = torch.nn.functional.cosine_similarity(g_mm, g_u, dim=0)
    return cos, torch.where(cos > 0, torch.tensor(0.5, device=g_mm.device), min_norm_weight(g_mm, g_u))


def pareto_grads(g_mm: list, g_u: list, w: torch.Tensor, gamma: float) -> list[torch.Tensor]:
    """Per tensor: new = 2 (w g_mm + (1 - w) g_u), scaled by max(1, |g_mm + g_u| / |new|), times gamma."""
    out = []
    for a, b in zip(g_mm, g_u):
        new = 2 * (w * a + (1 - w) * b)
        out.append(gamma * new * ((a + b).norm() / new.norm().clamp_min(1e-20)).clamp_min(1.0))
    return out


@BALANCERS.register("mmpareto")
class MMPareto(Balancer):
    """MMPareto: multi-loss; each encoder steps along the Pareto combination of its multimodal and unimodal gradients.
    One extra backward pass gives g_mm (``torch.autograd.grad``); g_u is the summed gradient minus g_mm."""
    objective = "multi_loss"

    def __init__(self, *, gamma: float = 1.5, **base):
        super().__init__(**base)
        require(finite(gamma) and gamma > 0, f"mmpareto: gamma must be a finite number > 0, got {gamma!r}")
        self.gamma = gamma

    def setup(self, model, optimizer) -> None:
        super().setup(model, optimizer)
        self._enc = {m: [p for p in model.encoders[m].parameters() if p.requires_grad] for m in model.modalities}

    def loss(self, outputs, labels, losses):
        params = [p for ps in self._enc.values() for p in ps]
        grads = torch.autograd.grad(losses["mm"], params, retain_graph=True, allow_unused=True)
        flat = global_mean(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                      for g, p in zip(grads, params)]), len(labels))   # (P,) over all ranks
        chunks = iter(flat.split([p.numel() for p in params]))
        self._g_mm = {m: [next(chunks).view_as(p) for p in ps] for m, ps in self._enc.items()}   # g_mm per tensor
        return losses

    def after_backward(self, model, outputs, labels):
        cos, weight = {}, {}
        for m, ps in self._enc.items():
            g_mm = self._g_mm[m]
            g_u = [(p.grad if p.grad is not None else torch.zeros_like(p)) - a for p, a in zip(ps, g_mm)]
            cos[m], weight[m] = pareto_weight(torch.cat([a.reshape(-1) for a in g_mm]),
                                              torch.cat([b.reshape(-1) for b in g_u]))
            for p, g in zip(ps, pareto_grads(g_mm, g_u, weight[m], self.gamma)):
                p.grad = g
        return trace_of(model.modalities, cos=cos, weight_mm=weight)
