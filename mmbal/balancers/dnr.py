"""D&R, Diagnosing and Re-learning (Wei et al., ECCV 2024): every ``reinit_every`` epochs (at most ``reinit_times``)
each modality's learning state is diagnosed from its unimodal features: k-means purity on the training set and on a
held-out part of it; the gap d_m gives the strength a_m = tanh(lambda d_m), and encoder m is softly re-initialised,
theta_m <- a_m theta_m^0 + (1 - a_m) theta_m (a well-fitting, overfitting encoder is pulled back to its start)."""
import numpy as np
import torch
from sklearn.cluster import KMeans

from mmbal.balancers.base import BALANCERS, Balancer, EpochContext, finite, require, true_class_probability
from mmbal.distributed import global_mean


def purity(features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0) -> float:
    """Share of samples whose k-means cluster (k = classes, features min-max scaled to [-1, 1]) votes their label."""
    span = features.max(0) - features.min(0)
    scaled = 2 * (features - features.min(0)) / np.where(span > 0, span, 1) - 1               # (N, D)
    clusters = KMeans(n_clusters=num_classes, random_state=seed, n_init=10).fit_predict(scaled)
    return sum(np.bincount(labels[clusters == c]).max() for c in np.unique(clusters)) / len(labels)


@torch.no_grad()
def features_of(model, loader, device) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pooled features {m: (N, D)} and labels (N,) of a loader, in eval mode."""
    was_training, feats, labels = model.training, {m: [] for m in model.modalities}, []
    model.eval()
    for batch in loader:
        _, z = model.encode({m: batch[m].to(device) for m in model.modalities})
        for m in model.modalities:
            feats[m].append(z[m].float().cpu())
        labels.append(batch["label"])
    model.train(was_training)
    return {m: torch.cat(v).numpy() for m, v in feats.items()}, torch.cat(labels).numpy()


def reinit_(params: list[torch.Tensor], initial: list[torch.Tensor], strength: float) -> None:
    """theta <- a theta^0 + (1 - a) theta, in place (D&R's soft re-initialisation)."""
    for p, p0 in zip(params, initial):
        p.mul_(1 - strength).add_(p0.to(p.device), alpha=strength)


@BALANCERS.register("dnr")
class DnR(Balancer):
    """D&R: joint training; encoders softly re-initialised by their train / held-out k-means purity gap.
    At epochs reinit_every, 2 reinit_every, ... (``reinit_times`` in all); ``holdout``: the held-out fraction."""
    stateful = ("initial", "reinits")

    def __init__(self, *, lam: float = 3.0, reinit_every: int = 4, reinit_times: int = 3, holdout: float = 0.1,
                 **base):
        super().__init__(**base)
        require(finite(lam) and lam >= 0, f"dnr: lam must be a finite number >= 0, got {lam!r}")
        for name, v in (("reinit_every", reinit_every), ("reinit_times", reinit_times)):
            require(isinstance(v, int) and v >= 1, f"dnr: {name} must be an integer >= 1, got {v!r}")
        require(finite(holdout) and 0 < holdout < 1, f"dnr: holdout must be in (0, 1), got {holdout!r}")
        self.lam, self.reinit_every, self.reinit_times, self.holdout = lam, reinit_every, reinit_times, holdout
        self.initial, self.reinits = None, 0      # modality -> the encoder's initial tensors; re-inits done

    def strengths(self, ctx: EpochContext) -> dict[str, dict[str, float]]:
        """{"purity_train", "purity_holdout", "strength"} -> modality -> value (a_m = tanh(lambda |gap|))."""
        (train, y_train), (held, y_held) = (features_of(ctx.model, loader, ctx.device)
                                            for loader in (ctx.train_loader, ctx.holdout_loader))
        c = ctx.model.num_classes
        out = {"purity_train": {m: purity(train[m], y_train, c) for m in train},
               "purity_holdout": {m: purity(held[m], y_held, c) for m in held}}
        gap = {m: abs(out["purity_train"][m] - out["purity_holdout"][m]) for m in train}
        return out | {"strength": {m: global_mean(torch.tanh(torch.tensor(self.lam * g))).item()  # ranks agree
                                   for m, g in gap.items()}}

    @torch.no_grad()
    def on_epoch_start(self, ctx: EpochContext) -> dict[str, float]:
        encoders = {m: list(ctx.model.encoders[m].parameters()) for m in ctx.model.modalities}
        if self.initial is None:
            self.initial = {m: [p.detach().cpu().clone() for p in ps] for m, ps in encoders.items()}
        if ctx.epoch == 0 or ctx.epoch % self.reinit_every or self.reinits >= self.reinit_times:
            return {"reinits": self.reinits}
        require(ctx.holdout_loader is not None, "dnr: the trainer gave no held-out loader (holdout must be > 0)")
        state = self.strengths(ctx)
        for m, ps in encoders.items():
            reinit_(ps, self.initial[m], state["strength"][m])
        self.reinits += 1
        return {"reinits": self.reinits, **{f"{key}/{m}": v for key, per in state.items() for m, v in per.items()}}

    def after_backward(self, model, outputs, labels):
        return {f"score/{m}": true_class_probability(outputs["logits"][m], labels) for m in model.modalities}
