"""ReconBoost (Hua et al., ICML 2024): modality-alternating boosting. A stage trains one modality's learner (encoder
+ head) alone with L = mean_c y_c (-w1 + w2 q_c) log p_m,c, q = softmax of the detached ensemble of the other
learners (the reconcilement term); an ensemble stage then trains every learner on CE of their summed logits, which
is also the prediction. Stages cycle m_1, ensemble, m_2, ensemble, ... (the MLB code). The authors' alpha MSE term
is computed on detached outputs in both official codes, so it never trains anything; it is left out."""
import torch
import torch.nn.functional as F

from mmbal.balancers.base import BALANCERS, Balancer, EpochContext, finite, require


def stage_of(epoch: int, modalities: tuple[str, ...], epoch_stages: int, ensemble_stages: int) -> str | None:
    """The modality a stage trains at ``epoch`` (None: an ensemble stage); cycle of M (E + S) epochs."""
    position = epoch % (len(modalities) * (epoch_stages + ensemble_stages))
    block, within = divmod(position, epoch_stages + ensemble_stages)
    return modalities[block] if within < epoch_stages else None


def boosting_loss(logits: torch.Tensor, others: torch.Tensor, labels: torch.Tensor, *, w1: float,
                  w2: float) -> torch.Tensor:
    """Batch mean of mean_c y_c (-w1 + w2 q_c) log p_c, q = softmax(others) (the authors' form); (B, C) logits."""
    target = F.one_hot(labels, logits.shape[1]).float()                      # (B, C)
    q = torch.softmax(others.detach().float(), 1)                            # (B, C) ensemble of the others
    log_p = torch.log_softmax(logits.float(), 1)
    return (target * (-w1 + w2 * q) * log_p).mean(1).mean()


@BALANCERS.register("reconboost")
class ReconBoost(Balancer):
    """ReconBoost: stage-wise boosting of one modality's learner at a time, then of their ensemble (summed logits).
    ``on_epoch_start`` picks the stage, ``loss`` replaces the objective, ``forward`` predicts with the ensemble."""
    objective = "multi_loss"
    stateful = ("learner",)

    def __init__(self, *, w1: float = 3.0, w2: float = 1.0, epoch_stages: int = 1,
                 ensemble_stages: int = 1, **base):
        super().__init__(**base)
        for name, v in (("epoch_stages", epoch_stages), ("ensemble_stages", ensemble_stages)):
            require(isinstance(v, int) and v >= (name == "epoch_stages"), f"reconboost: {name} must be an integer "
                    f">= {int(name == 'epoch_stages')}, got {v!r}")
        require(finite(w1) and finite(w2) and w1 >= 0 and w2 >= 0,
                f"reconboost: w1 and w2 must be finite numbers >= 0, got {w1!r}, {w2!r}")
        self.w1, self.w2 = w1, w2
        self.epoch_stages, self.ensemble_stages = epoch_stages, ensemble_stages
        self.learner: str | None = None

    def setup(self, model, optimizer) -> None:
        super().setup(model, optimizer)
        owned = model.modality_params(("encoder", "head"))
        self._frozen = {m: [p for k, ps in owned.items() if k != m for p in ps] + list(model.fusion.parameters())
                        for m in model.modalities}

    def on_epoch_start(self, ctx: EpochContext) -> dict[str, float]:
        self.learner = stage_of(ctx.epoch, ctx.model.modalities, self.epoch_stages, self.ensemble_stages)
        return {f"stage/{m}": float(self.learner == m) for m in ctx.model.modalities}

    def forward(self, model, inputs):
        out = model(inputs)
        out["logits"]["mm"] = sum(out["logits"][m] for m in model.modalities)   # (B, C) the ensemble
        return out

    def loss(self, outputs, labels, losses):
        logits = outputs["logits"]
        if self.learner is None:
            return {**losses, "total": losses["mm"]}                       # CE of the summed logits
        others = sum(logits[m] for m in logits if m not in ("mm", self.learner))
        boost = boosting_loss(logits[self.learner], others, labels, w1=self.w1, w2=self.w2)
        return {**losses, "boost": boost, "total": boost}

    def after_backward(self, model, outputs, labels):
        if self.learner is not None:
            for p in self._frozen[self.learner]:
                p.grad = None                                              # the optimizer skips them: unchanged
        return {f"active/{m}": torch.tensor(float(self.learner in (None, m))) for m in model.modalities}
