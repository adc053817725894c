"""MMCosine (Xu et al., ICASSP 2023): logits_c = s * sum_m cos(z_m, W_{m,c}), features and each class
row of modality m's block of the late linear fusion L2-normalised (no bias): every modality's
contribution is bounded by s, so the dominant one cannot win by growing its norms."""
import torch
import torch.nn.functional as F

from mmbal.balancers.base import BALANCERS, Balancer, finite, require, trace_of, true_class_probability


def cosine_logits(z: torch.Tensor, weight: torch.Tensor, scaling: float) -> torch.Tensor:
    """s * cos between features (B, D) and class weights (C, D) -> (B, C)."""
    return scaling * F.normalize(z, dim=1) @ F.normalize(weight, dim=1).T


@BALANCERS.register("mmcosine")
class MMCosine(Balancer):
    """MMCosine: fused logits = s * sum_m cos(z_m, W_m) (normalised features and class weights).
    A forward hook (training and evaluation) on the class weights ``fusion.parts[m]`` of a ``late_linear`` fusion."""

    def __init__(self, *, scaling: float = 10.0, **base):
        super().__init__(**base)
        require(self.start_epoch == 0 and self.end_epoch is None, "mmcosine: no modulation window (start_epoch, "
                "end_epoch): it changes the fused head itself, in training and in evaluation")
        require(finite(scaling) and scaling > 0, f"mmcosine: scaling must be a finite number > 0, got {scaling!r}")
        self.scaling = float(scaling)

    def setup(self, model, optimizer) -> None:
        require(model.fusion.late_linear, "mmcosine needs a late linear fusion (concat or sum) whose per-modality "
                f"parts map features to class logits; got {type(model.fusion).__name__}")
        super().setup(model, optimizer)

    def forward(self, model, inputs):
        tokens, features = model.encode(inputs)
        per = {m: cosine_logits(z, model.fusion.parts[m].weight, self.scaling) for m, z in features.items()}  # (B, C)
        self._per_modality = {m: v.detach() for m, v in per.items()}
        return {"logits": {"mm": sum(per.values())} | model.heads_logits(features), "features": features,
                "tokens": tokens if model.fusion.uses_tokens else None}

    def after_backward(self, model, outputs, labels):
        per = self._per_modality
        return trace_of(per, score={m: true_class_probability(v, labels) for m, v in per.items()},
                        cos={m: v.gather(1, labels[:, None]).mean() / self.scaling for m, v in per.items()})
