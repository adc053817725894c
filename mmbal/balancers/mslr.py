"""MSLR (Yao & Mihalcea, ACL Findings 2022), dynamic strategy in the MLB code base's form: at each epoch
lr_m = init_m * a_{t-1} / mean(a_{t-1-K} .. a_{t-2}) (1 until K + 1 accuracies exist), a = validation
accuracy of modality m's unimodal head, K = ``keep_memory``, init_m = ``init_scale[m]``."""
import torch

from mmbal.balancers.base import BALANCERS, Balancer, EpochContext, check_known_modalities, finite, require

MIN_PAST_ACCURACY = 1e-6   # below this the past mean carries no signal (an accuracy is k/N >= 1/N)


def mslr_rates(val_accuracies: dict[str, list[float]], *, keep_memory: int,
               init_scale: dict[str, float] | None = None) -> tuple[dict, dict]:
    """(ratio_m, lr multiplier init_m * ratio_m) per modality: the latest accuracy over the mean of the K before
    it; 1 while the history is short, and 1 when that mean is ~0 (a ratio to nothing would blow the rate up)."""
    ratios = {}
    for m, acc in val_accuracies.items():
        past = list(acc)[-1 - keep_memory:-1]
        mean = sum(past) / max(len(past), 1)
        ratios[m] = acc[-1] / mean if len(acc) > keep_memory and mean >= MIN_PAST_ACCURACY else 1.0
    return ratios, {m: (init_scale or {}).get(m, 1.0) * r for m, r in ratios.items()}


@BALANCERS.register("mslr")
class MSLR(Balancer):
    """MSLR: per-modality rates init_m * (val acc / its recent mean), set per epoch. ``acts_on`` "gradient" multiplies
    the encoder gradients by the rate each step (the MLB code, the reference numbers); "update" scales the learning
    rate of encoder and fusion part, as a learning rate does (Adam cannot divide it out)."""
    stateful = ("_k", "_k_trace")   # the epoch's rates (a run resumed mid-epoch does not recompute them)

    def __init__(self, *, init_scale: dict[str, float] | None = None, keep_memory: int = 5, acts_on: str = "update",
                 **base):
        super().__init__(acts_on=acts_on, **base)
        self.scaled_roles = ("encoder",) if acts_on == "gradient" else ("encoder", "fusion")   # probe heads: never
        require(isinstance(keep_memory, int) and keep_memory >= 1,
                f"mslr: keep_memory must be an integer >= 1, got {keep_memory!r}")
        init_scale = dict(init_scale or {})
        bad = {m: v for m, v in init_scale.items() if not (finite(v) and v > 0)}
        require(not bad, f"mslr: init_scale values must be finite numbers > 0, got {bad}")
        self.init_scale, self.keep_memory = init_scale, keep_memory

    def setup(self, model, optimizer) -> None:
        check_known_modalities("mslr: init_scale", self.init_scale, model)
        super().setup(model, optimizer)
        self._set({m: self.init_scale.get(m, 1.0) for m in model.modalities})

    def _set(self, rates: dict[str, float]) -> None:
        self._k = {m: float(k) for m, k in self.windowed(rates).items()}    # 1 outside the window
        self._k_trace = {m: torch.tensor(k) for m, k in self._k.items()}
        if self.acts_on == "update":
            self.apply_coefficients(self._k)   # persistent per-group lr_scale

    def on_epoch_start(self, ctx: EpochContext) -> dict[str, float]:
        accuracies = {m: [h["val"][m]["accuracy"] for h in ctx.history] for m in self.modalities}
        ratios, rates = mslr_rates(accuracies, keep_memory=self.keep_memory, init_scale=self.init_scale)
        self._set(rates)
        return {f"ratio/{m}": ratios[m] for m in self.modalities} | {f"lr_scale/{m}": k for m, k in self._k.items()}

    def after_backward(self, model, outputs, labels):
        if self.acts_on == "gradient":
            self.apply_coefficients(self._k)
        return {f"coeff/{m}": self._k_trace[m] for m in model.modalities}
