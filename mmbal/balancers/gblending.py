"""G-Blending (Wang, Tran & Feiszli, CVPR 2020): L = sum_k w_k L_k over the fused and unimodal heads, with
w_k proportional to G_k / O_k^2 (their optimal blend): between two checkpoints, G_k = drop of head k's loss on a
held-out part of the training set and O_k = growth of its gap to the training loss (the overfitting). Online
G-Blend: recomputed every ``every`` epochs (a super-epoch), uniform before the first estimate."""
import torch
import torch.nn.functional as F

from mmbal.balancers.base import BALANCERS, Balancer, EpochContext, finite, require
from mmbal.distributed import global_mean


def blend_weights(previous: dict, current: dict, total: float) -> dict[str, float]:
    """{head: (train loss, held-out loss)} at two checkpoints -> w_k = total * (G_k / O_k^2) / sum_j (G_j / O_j^2),
    G_k = max(0, L*_prev - L*_now), O_k = (L*_now - L_now) - (L*_prev - L_prev); uniform when no head generalised."""
    ratio = {}
    for k, (train, held) in current.items():
        gain, overfit = max(0.0, previous[k][1] - held), (held - train) - (previous[k][1] - previous[k][0])
        ratio[k] = gain / max(overfit * overfit, 1e-8)
    norm = sum(ratio.values())
    return {k: total * (r / norm if norm > 0 else 1 / len(ratio)) for k, r in ratio.items()}


@torch.no_grad()
def head_losses(model, loader, device) -> dict[str, float]:
    """Mean cross-entropy of every head over a loader, in eval mode."""
    was_training, sums, n = model.training, {}, 0
    model.eval()
    for batch in loader:
        labels = batch["label"].to(device)
        for k, v in model({m: batch[m].to(device) for m in model.modalities})["logits"].items():
            sums[k] = sums.get(k, 0.0) + F.cross_entropy(v.float(), labels, reduction="sum")
        n += len(labels)
    model.train(was_training)
    return {k: global_mean(s / n, n).item() for k, s in sums.items()}         # over all ranks


@BALANCERS.register("gblending")
class GBlending(Balancer):
    """G-Blending: multi-loss with blend weights w_k ~ G_k / O_k^2 from a held-out part of the training set.
    The weights sum to the number of heads (uniform: plain multi-loss); ``holdout``: the held-out fraction."""
    objective = "multi_loss"
    stateful = ("weights", "previous")

    def __init__(self, *, every: int = 5, holdout: float = 0.1, **base):
        super().__init__(**base)
        require(isinstance(every, int) and every >= 1, f"gblending: every must be an integer >= 1, got {every!r}")
        require(finite(holdout) and 0 < holdout < 1, f"gblending: holdout must be in (0, 1), got {holdout!r}")
        self.every, self.holdout = every, holdout
        self.weights, self.previous = None, None     # head -> w_k; head -> (train, held-out loss) at the last estimate

    def on_epoch_start(self, ctx: EpochContext) -> dict[str, float]:
        if ctx.epoch % self.every:
            return {}
        require(ctx.holdout_loader is not None, "gblending: the trainer gave no held-out loader (holdout must be > 0)")
        held = head_losses(ctx.model, ctx.holdout_loader, ctx.device)
        train = head_losses(ctx.model, ctx.train_loader, ctx.device)
        current = {k: (train[k], held[k]) for k in held}
        self.weights = (blend_weights(self.previous, current, len(current)) if self.previous is not None
                        else {k: 1.0 for k in current})
        self.previous = current
        return {f"{name}/{k}": v for k, (t, h) in current.items()
                for name, v in (("train_loss", t), ("holdout_loss", h), ("blend", self.weights[k]))}

    def loss(self, outputs, labels, losses):
        w = self.weights or {}
        total = sum(w.get(k, 1.0) * v for k, v in losses.items() if k != "total")
        self._trace = {f"blend/{k}": torch.tensor(w.get(k, 1.0)) for k in losses if k != "total"}
        return {**losses, "total": total}
