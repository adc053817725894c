"""MLB (Kontras et al., BMVC 2024): k_i = 1 + tanh(alpha (r_i - 1)), r_i = mean_{m != i} s_m / s_i with
s_m the true-class probability of modality m's unimodal head: the lagging modality (r_i > 1) is accelerated, the
leading one slowed. ``beta_max`` makes the accelerating branch 1 + (beta_max - 1) tanh(...) (the IJCV/README form)."""
import torch

from mmbal.balancers.base import (BALANCERS, Balancer, check_known_modalities, finite, require,
                                  stacked_scores, trace_of, true_class_probability)
from mmbal.models.fusion import FiLMFusion, TransformerFusion

VARIANTS = ("heads", "stopgrad", "fused")
SCOPES = ("mmbal", "reference")   # reference: the MLB code's name matching (misses FiLM's, transformer's parts)


def mlb_ratios(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """r_i = mean_{j != i} s_j / s_i, computed as the mean of s_j / s_i (exactly 1 at equal scores)."""
    n = len(scores)
    require(n >= 2, f"MLB needs at least two modalities, got {list(scores)}")
    s = stacked_scores(scores)                                     # (M,)
    pairwise = s[None, :] / s[:, None] * (1.0 - torch.eye(n, device=s.device))   # (M, M): [i, j] = s_j / s_i, j != i
    return dict(zip(scores, pairwise.sum(1) / (n - 1)))            # (M,)


def coefficients_from_ratios(ratios: dict[str, torch.Tensor], alpha: float, beta_max: float | None = None) -> dict:
    """k_i = 1 + tanh(alpha (r_i - 1)); with beta_max, 1 + (beta_max - 1) tanh(...) when r_i > 1."""
    out = {}
    for m, r in ratios.items():
        t = torch.tanh(alpha * (r - 1.0))
        out[m] = 1.0 + t if beta_max is None else torch.where(r > 1.0, 1.0 + (beta_max - 1.0) * t, 1.0 + t)
    return out


def mlb_coefficients(scores: dict[str, torch.Tensor], alpha: float, beta_max: float | None = None) -> dict:
    """MLB's per-modality coefficients k_m from the scores s_m (dict modality -> scalar tensor)."""
    return coefficients_from_ratios(mlb_ratios(scores), alpha, beta_max)


@BALANCERS.register("mlb")
class MLB(Balancer):
    """MLB: k = 1 + tanh(alpha (r - 1)) from the unimodal heads (beta_max caps acceleration).
    ``variant`` "heads" is the method (multi-loss objective); "stopgrad" (``--cls linear_stopgrad``: the joint
    objective's probe heads) and "fused" (``--cls linear_ogm``: the fused head's split) are defined with joint.
    ``scope`` "reference" leaves FiLM's generator and the transformer's token projections unscaled, as the MLB code."""
    objective = "multi_loss"

    def __init__(self, *, alpha: float = 0.5, beta_max: float | None = None, variant: str = "heads",
                 scope: str = "mmbal", **base):
        super().__init__(**base)
        require(finite(alpha) and alpha >= 0, f"mlb: alpha must be a finite number >= 0, got {alpha!r}")
        require(beta_max is None or (finite(beta_max) and beta_max > 0),
                f"mlb: beta_max must be a finite number > 0 (or None for the uncapped form), got {beta_max!r}")
        require(variant in VARIANTS, f"mlb: unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
        require(scope in SCOPES, f"mlb: unknown scope {scope!r}; valid: {', '.join(SCOPES)}")
        self.alpha, self.beta_max, self.variant, self.scope = alpha, beta_max, variant, scope
        self.objective = "multi_loss" if variant == "heads" else "joint"
        if variant == "fused":   # scores from the fused head: the unimodal heads are only probes
            self.scaled_roles = ("encoder", "fusion")

    def setup(self, model, optimizer) -> None:
        require(self.variant != "stopgrad" or model.detach_heads, "mlb: variant 'stopgrad' reads the probe heads "
                "of the joint objective (detached features); train it with objective 'joint'")
        if self.scope == "reference" and isinstance(model.fusion, (FiLMFusion, TransformerFusion)):
            self.scaled_roles = tuple(r for r in self.scaled_roles if r != "fusion")
        super().setup(model, optimizer)

    def scores(self, model, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = outputs["logits"]
        if self.variant == "fused":
            with torch.no_grad():
                logits = model.fusion.unimodal_logits(outputs["features"], outputs.get("tokens"))
        return {m: true_class_probability(logits[m], labels) for m in model.modalities}

    def after_backward(self, model, outputs, labels):
        scores = self.scores(model, outputs, labels)
        ratios = mlb_ratios(scores)
        coeffs = self.apply_coefficients(coefficients_from_ratios(ratios, self.alpha, self.beta_max))
        return trace_of(model.modalities, score=scores, ratio=ratios, coeff=coeffs)


@BALANCERS.register("fixed")
class FixedCoefficients(Balancer):
    """Constant per-modality k_m, e.g. coefficients={"audio": 0.8, "video": 1.5} (fixed-k control of MLB)."""
    objective = "multi_loss"

    def __init__(self, *, coefficients: dict[str, float], **base):
        super().__init__(**base)
        require(isinstance(coefficients, dict) and bool(coefficients), "fixed: coefficients must be a dict "
                f"modality -> k, e.g. {{'audio': 0.8, 'video': 1.5}}, got {coefficients!r}")
        bad = {m: k for m, k in coefficients.items() if not (finite(k) and k >= 0)}
        require(not bad, f"fixed: every coefficient must be a finite number >= 0, got {bad}")
        self.coefficients = {m: float(k) for m, k in coefficients.items()}

    def setup(self, model, optimizer) -> None:
        check_known_modalities("fixed: coefficients", self.coefficients, model)
        super().setup(model, optimizer)
        self._k = {m: self.coefficients.get(m, 1.0) for m in model.modalities}
        self._k_trace = {m: torch.tensor(k) for m, k in self._k.items()}

    def after_backward(self, model, outputs, labels):
        self.apply_coefficients(self._k)
        scores = {m: true_class_probability(outputs["logits"][m], labels) for m in model.modalities}
        return trace_of(model.modalities, score=scores, coeff=self.windowed(self._k_trace))
