"""Training objectives: joint (fused CE only), the multi-loss objective of MLB, and single-head CE.
multi_loss: L = CE(f_c(z_1..z_M), y) + sum_m lambda_m CE(g_m(z_m), y)   (Kontras et al., BMVC 2024; lambda_m = 1)."""
import torch
import torch.nn.functional as F

from mmbal.registry import Registry

OBJECTIVES = Registry("objective")


class Objective:
    """Maps logits {"mm", m...} and labels to losses {"mm", m..., "total"}; the one owner of
    ``model.detach_heads`` (set in ``configure``, once per run)."""
    heads_train_encoders = True
    weights: float | dict[str, float] = 1.0   # lambda_m: one value for every head, or modality -> value

    def configure(self, model) -> None:
        """Make the model's unimodal heads train the encoders, or act as detached probes."""
        model.detach_heads = not self.heads_train_encoders

    def unimodal_weight(self, modality: str) -> float:
        return float(self.weights.get(modality, 1.0) if isinstance(self.weights, dict) else self.weights)

    def __call__(self, logits: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = {k: F.cross_entropy(v, labels) for k, v in logits.items()}
        unimodal = (self.unimodal_weight(m) * loss for m, loss in losses.items() if m != "mm")
        return losses | {"total": sum(unimodal, losses["mm"])}


@OBJECTIVES.register("joint")
class JointObjective(Objective):
    """Single-loss joint training: CE of the fused prediction (heads are detached probes).
    The probes' loss is in the total but, features being detached, trains the probes only."""
    heads_train_encoders = False


@OBJECTIVES.register("multi_loss")
class MultiLossObjective(Objective):
    """Fused CE + weighted unimodal CE of every modality's head (MLB's objective)."""

    def __init__(self, weights: float | dict[str, float] = 1.0):
        if any(w < 0 for w in (weights.values() if isinstance(weights, dict) else [weights])):
            raise ValueError(f"multi_loss: unimodal loss weights must be >= 0, got {weights}")
        self.weights = weights


class SingleHeadObjective(Objective):
    """Cross-entropy of a unimodal model's single head (reported under "mm" and the modality)."""

    def __call__(self, logits, labels):
        loss = F.cross_entropy(logits["mm"], labels)
        return {k: loss for k in logits} | {"total": loss}
