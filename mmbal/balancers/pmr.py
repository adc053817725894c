"""PMR (Fan et al., CVPR 2023): prototypes c_{m,k} = class means of z_m, refreshed per epoch; the modality
with rho_m = s_m / mean_{j != m} s_j < 1 (s_m: summed prototype probability of y) gets alpha * PCE_m, as in
the MLB code base; the PMR paper's entropy regulariser (``entropy_weight``, ``entropy_epochs``) is off by default.
``normalize_features``: z_m through an affine-free batch norm first (the MLB code); ``momentum``: c <- (1 - mu) c_new
+ mu c_old at each refresh (the PMR code: raw features, mu = 0.2)."""
import math

import torch
import torch.nn.functional as F

from mmbal.balancers.base import (BALANCERS, Balancer, EpochContext, finite, mean_of_others, require, stacked_scores)
from mmbal.distributed import global_mean, global_sum


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     previous: torch.Tensor | None = None) -> torch.Tensor:
    """(N, D) features, (N,) labels -> (C, D) class means; classes absent here keep ``previous``."""
    sums = torch.zeros(num_classes, features.shape[1], device=features.device, dtype=features.dtype)
    sums = global_sum(sums.index_add_(0, labels, features))                     # (C, D), over every rank
    counts = global_sum(torch.bincount(labels, minlength=num_classes).to(features.dtype))     # (C,)
    means = sums / counts.clamp_min(1)[:, None]
    return means if previous is None else torch.where(counts[:, None] > 0, means, previous)


def prototype_logits(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Negative Euclidean distance to every prototype: (B, D), (C, D) -> (B, C)."""
    return -torch.cdist(z.float(), prototypes.float())


def pmr_weights(scores: dict[str, torch.Tensor], alpha: float) -> tuple[dict, dict]:
    """(rho_m, beta_m): rho_m = s_m / mean of the others; beta_m = alpha for rho_m < 1, else 0."""
    s = stacked_scores(scores)                                                    # (M,)
    rho = s / mean_of_others(s)                                                   # (M,)
    beta = torch.where(rho < 1.0, torch.full_like(rho, alpha), torch.zeros_like(rho))
    return dict(zip(scores, rho)), dict(zip(scores, beta))


@BALANCERS.register("pmr")
class PMR(Balancer):
    """PMR: prototypical cross-entropy (weight alpha, 0 outside the window) for the modality that lags on prototypes."""
    stateful = ("prototypes",)

    def __init__(self, *, alpha: float = 1.75, refresh_fraction: float = 0.1, entropy_weight: float = 0.0,
                 entropy_epochs: int = 0, normalize_features: bool = False, momentum: float = 0.0, **base):
        super().__init__(**base)
        require(finite(alpha) and alpha >= 0, f"pmr: alpha must be a finite number >= 0, got {alpha!r}")
        require(finite(refresh_fraction) and 0 < refresh_fraction <= 1,
                f"pmr: refresh_fraction must be in (0, 1], got {refresh_fraction!r}")
        require(finite(entropy_weight) and entropy_weight >= 0,
                f"pmr: entropy_weight must be >= 0, got {entropy_weight!r}")
        require(isinstance(entropy_epochs, int) and entropy_epochs >= 0,
                f"pmr: entropy_epochs must be an integer >= 0, got {entropy_epochs!r}")
        require(isinstance(normalize_features, bool), f"pmr: normalize_features must be True or False, got "
                f"{normalize_features!r}")
        require(finite(momentum) and 0 <= momentum < 1, f"pmr: momentum must be in [0, 1), got {momentum!r}")
        self.alpha, self.refresh_fraction, self.normalize_features = alpha, refresh_fraction, normalize_features
        self.entropy_weight, self.entropy_epochs, self.momentum = entropy_weight, entropy_epochs, momentum
        self.prototypes = {}   # modality -> (C, D) class means

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, D): z, or z standardised over the batch (BatchNorm1d(affine=False) in training mode)."""
        return F.batch_norm(z.float(), None, None, training=True) if self.normalize_features else z

    @torch.no_grad()
    def on_epoch_start(self, ctx: EpochContext) -> dict[str, float]:
        """Recompute prototypes: every training batch at epoch 0, ``refresh_fraction`` of them later."""
        model, loader = ctx.model, ctx.train_loader
        n_batches = max(1, math.ceil((self.refresh_fraction if self.prototypes else 1.0) * len(loader)))
        was_training = model.training
        model.eval()
        feats: dict[str, list] = {m: [] for m in model.modalities}
        labels = []
        for i, batch in enumerate(loader):
            if i >= n_batches:
                break
            _, features = model.encode({m: batch[m].to(ctx.device) for m in model.modalities})
            for m in model.modalities:
                feats[m].append(self.features(features[m].float()))              # (B, D)
            labels.append(batch["label"].to(ctx.device))
        model.train(was_training)
        for m in model.modalities:
            old = self.prototypes.get(m)
            new = class_prototypes(torch.cat(feats[m]), torch.cat(labels), model.num_classes, old)      # (C, D)
            self.prototypes[m] = new if old is None else (1 - self.momentum) * new + self.momentum * old
        return {f"proto_spread/{m}": torch.pdist(self.prototypes[m]).mean().item() for m in model.modalities}

    def loss(self, outputs, labels, losses):
        names = list(outputs["features"])
        logits = {m: prototype_logits(self.features(outputs["features"][m]), self.prototypes[m]) for m in names}
        scores = {m: global_sum(torch.softmax(logits[m].detach(), 1).gather(1, labels[:, None]).sum()) for m in names}
        rho, beta = pmr_weights(scores, self.alpha)
        count = global_sum(torch.tensor(float(len(labels))))                      # the global batch size
        beta = beta if self.active else {m: torch.zeros_like(b) for m, b in beta.items()}
        total = losses["total"]
        self._trace = {}
        for m in names:
            pce = F.cross_entropy(logits[m], labels)
            total = total + beta[m] * pce
            if self.entropy_weight > 0 and self.epoch < self.entropy_epochs:
                p = torch.softmax(logits[m], 1)
                entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(1).mean()
                # Raise the leading modality's prototype entropy: slows its early convergence.
                total = total - self.entropy_weight * (rho[m] > 1).float() * entropy
            self._trace.update({f"score/{m}": scores[m] / count, f"ratio/{m}": rho[m],
                                f"coeff/{m}": beta[m], f"pce/{m}": global_mean(pce.detach(), len(labels)),
                                f"dist/{m}": global_mean(-logits[m].detach().gather(1, labels[:, None]).mean(),
                                                         len(labels))})
        return {**losses, "total": total}
