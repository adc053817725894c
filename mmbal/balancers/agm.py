"""AGM (Li et al., ICCV 2023): k_m = exp(alpha min(r*_m - r_m, 10)) scales the gradient into phi_m,
modality m's Shapley output (sum_m phi_m = fused logits). ``coalition`` "features" zeroes the absent modalities'
features and re-runs only the fusion; "inputs" zeroes their raw inputs and re-runs the encoders in eval mode (the
AGM and MLB codes). ``clip_on_fusion_grad``: clip the gradient norm to 1 when a fusion gradient leaves [-1, 1]."""
import math
from itertools import combinations

import torch

from mmbal.balancers.base import BALANCERS, Balancer, mean_of_others, require, trace_of
from mmbal.distributed import global_mean

MAX_ALPHA = 8.0   # k_m <= exp(10 alpha) must stay finite in float32
COALITIONS = ("features", "inputs")


def zero_input_encodings(model, inputs: dict) -> tuple[dict, dict]:
    """(features (1, D), tokens (1, L, D)) of every encoder on an all-zero input, in eval mode (gradients flow)."""
    was_training = model.training
    model.eval()
    tokens, features = model.encode({m: torch.zeros_like(inputs[m][:1]) for m in model.modalities})
    model.train(was_training)
    return features, tokens


def coalition_logits(fusion, features: dict, tokens: dict | None, *, full: torch.Tensor | None = None,
                     absent: tuple[dict, dict] | None = None) -> dict:
    """Fused logits with the features (and tokens) of absent modalities set to zero, or to ``absent`` (features,
    tokens of one sample, broadcast over the batch), in one batched eval-mode call."""
    names = tuple(fusion.modalities)
    sizes = range(len(names) + (full is None))          # every subset, smallest first (the full one if not given)
    wanted = [frozenset(c) for size in sizes for c in combinations(names, size)]

    def stacked(source, fill):              # (B, ...) per modality -> (K*B, ...), absent ones zero or ``fill``
        return {m: torch.cat([x if m in c else fill[m].expand_as(x) if fill else torch.zeros_like(x) for c in wanted])
                for m, x in source.items()}

    was_training = fusion.training
    fusion.eval()                           # AGM runs its coalition passes in eval mode
    fills = absent or (None, None)
    out = fusion(stacked(features, fills[0]), None if tokens is None else stacked(tokens, fills[1]))   # (K*B, C)
    fusion.train(was_training)
    values = dict(zip(wanted, out.split(next(iter(features.values())).shape[0])))    # K x (B, C)
    return values if full is None else values | {frozenset(names): full}


def shapley_outputs(values: dict[frozenset, torch.Tensor], names) -> dict[str, torch.Tensor]:
    """phi_m = f(empty)/M + sum_S |S|!(M-|S|-1)!/M! (f(S + m) - f(S)), S over subsets without m."""
    n, phi = len(names), {}
    for m in names:
        total = values[frozenset()] / n
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in map(frozenset, combinations([o for o in names if o != m], size)):
                total = total + weight * (values[s | {m}] - values[s])
        phi[m] = total                                                   # (B, C)
    return phi


def agm_scores(phi: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """s_m = batch mean of -log softmax(phi_m)[y], the probability clamped at 1e-8 (detached)."""
    probs = {m: torch.softmax(v.detach().float(), dim=1).gather(1, labels[:, None]) for m, v in phi.items()}  # (B, 1)
    return {m: global_mean(-torch.log(p.clamp_min(1e-8)).mean(), len(p)) for m, p in probs.items()}


def agm_ratios(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """r_m = exp(mean_{j != m} s_j - s_m); for two modalities r_a = exp(s_v - s_a)."""
    s = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in scores.values()])   # (M,)
    return dict(zip(scores, torch.exp(mean_of_others(s) - s)))                        # (M,)


def agm_coefficients(ratios: dict, targets: dict, alpha: float) -> dict[str, torch.Tensor]:
    """k_m = exp(alpha * min(r*_m - r_m, 10))."""
    return {m: torch.exp(alpha * torch.clamp(targets[m] - ratios[m], max=10.0)) for m in ratios}


@BALANCERS.register("agm")
class AGM(Balancer):
    """AGM: k_m = exp(alpha (r*_m - r_m)) on the gradients of Shapley modality outputs."""
    acts_on_choices = ("gradient",)   # a Shapley output has no optimizer group of its own
    stateful = ("running", "steps")

    def __init__(self, *, alpha: float = 1.5, coalition: str = "features", clip_on_fusion_grad: bool = False, **base):
        super().__init__(**base)
        require(isinstance(alpha, (int, float)) and 0 <= alpha <= MAX_ALPHA, f"agm: alpha must be in [0, {MAX_ALPHA}] "
                f"(k can reach exp(10 alpha), which overflows float32 beyond that), got {alpha!r}")
        require(coalition in COALITIONS, f"agm: coalition must be one of {COALITIONS}, got {coalition!r}")
        require(isinstance(clip_on_fusion_grad, bool), f"agm: clip_on_fusion_grad must be True or False, got "
                f"{clip_on_fusion_grad!r}")
        self.alpha, self.steps, self.coalition, self.clip_on_fusion_grad = alpha, 0, coalition, clip_on_fusion_grad
        self.running: torch.Tensor | None = None   # running means of s_m, in model.modalities order

    def forward(self, model, inputs):
        outputs = model(inputs)
        if not model.training:
            return outputs                         # evaluation: the plain fused prediction
        names = model.modalities
        absent = zero_input_encodings(model, inputs) if self.coalition == "inputs" else None
        phi = shapley_outputs(coalition_logits(model.fusion, outputs["features"], outputs.get("tokens"),
                                               full=outputs["logits"]["mm"], absent=absent), names)  # (B, C) each
        scores = agm_scores(phi, inputs["label"])
        current = torch.stack([scores[m] for m in names])                        # (M,)
        if self.running is None:
            self.running = torch.zeros_like(current)
        ratios = agm_ratios(scores)
        targets = agm_ratios(dict(zip(names, self.running)))
        coeffs = self.windowed(agm_coefficients(ratios, targets, self.alpha))    # 1 outside the window
        self.steps += 1                            # running mean over every step so far
        self.running = self.running + (current - self.running) / self.steps
        for m in names:                            # backward: dL/dphi_m -> k_m dL/dphi_m
            phi[m].register_hook(lambda grad, k=coeffs[m].detach(): grad * k.to(grad.dtype))
        outputs["logits"]["mm"] = sum(phi[m] for m in names)                    # (B, C)
        self._trace = trace_of(names, score=scores, ratio=ratios, target=targets, coeff=coeffs)
        return outputs

    def setup(self, model, optimizer) -> None:
        super().setup(model, optimizer)
        self._fusion_weights = [p for name, p in model.fusion.named_parameters() if name != "bias"]   # clip check

    def after_backward(self, model, outputs, labels):
        """The AGM code's clip: total gradient norm to 1 when a fusion gradient (not the late sum's bias) exceeds 1."""
        if self.clip_on_fusion_grad:
            peaks = [p.grad.abs().max() for p in self._fusion_weights if p.grad is not None]
            clip = bool(peaks) and bool(torch.stack(peaks).max() > 1.0)                 # any |g| > 1
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            self._trace["clip/fusion"] = torch.tensor(float(clip))
        return self._trace
