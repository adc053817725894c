"""Run configuration: nested dataclasses with defaults (the Digits-AV recipe of the book)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

OPTIMIZERS, SCHEDULES = ("sgd", "adam", "adamw"), ("cosine", "constant", "cosine_restarts")


@dataclass
class DataConfig:
    name: str = "digits_av"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    num_workers: int = 0

    def __post_init__(self):
        check_ranges(self, batch_size="count", num_workers="index")


@dataclass
class ModelConfig:
    encoder: str = "small_cnn"
    fusion: str = "concat"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    fusion_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectiveConfig:
    name: str = "multi_loss"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BalancerConfig:
    name: str = "none"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "sgd"              # sgd | adam | adamw
    lr: float = 0.01
    momentum: float = 0.9          # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw
    weight_decay: float = 1e-4
    schedule: str = "cosine"       # cosine | constant | cosine_restarts (MLB code: warm-up, then warm restarts)
    warmup_steps: int = 0          # cosine, constant: linear ramp; cosine_restarts: base lr held (MLB code)
    restart_period: int = 4        # cosine_restarts: T_0 steps of the first cosine window
    restart_mult: int = 2          # cosine_restarts: T_mult, each window this many times longer
    epochs: int = 20
    grad_clip: float | None = None
    early_stop: int | None = None  # epochs without val improvement before stopping

    def __post_init__(self):
        check_ranges(self, lr="positive", momentum="fraction", betas="fractions", weight_decay="non-negative",
                     warmup_steps="index", epochs="count", restart_period="count", restart_mult="count",
                     grad_clip="positive?", early_stop="count?")
        for kind, value, valid in (("optimizer", self.name, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES)):
            if value not in valid:
                raise ValueError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


def _build(cls, raw: dict[str, Any]):
    """A ``cls`` config from nested dicts; unknown keys fail with the valid ones named."""
    known = {f.name: f.default_factory for f in fields(cls)}             # a sub-config's factory: its class
    unknown = set(raw) - set(known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}; valid: {sorted(known)}")
    return cls(**{k: _build(known[k], v) if is_dataclass(known[k]) and isinstance(v, dict)
                  else tuple(v) if k == "betas" else v for k, v in raw.items()})


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    amp: bool = False              # CUDA mixed precision (bfloat16 autocast)
    channels_last: bool = False    # CUDA: NHWC convolutions (speed; not part of the config hash, like device)
    compile: bool = False          # torch.compile the model (speed; not hashed either)
    select_head: str = "mm"        # head whose val accuracy selects the best epoch
    fast: bool = False             # recorded in results: was this a FAST (docs/CI) run?
    progress: bool = True
    regime: str | None = None      # None: one model as configured; else a regime of mmbal.regimes
    regime_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"modality": "audio"}

    def __post_init__(self):
        check_ranges(self, seed="index")

    to_dict = asdict                             # nested plain dicts
    from_dict = classmethod(_build)              # the inverse of to_dict


RANGES = {   # rule -> (test, range in words); "rule?" also allows None (unset)
    "positive": (lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
    "non-negative": (lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0"),
    "count": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "index": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "fractions": (lambda v: all(0 <= b < 1 for b in v), "numbers in [0, 1)"),
}


def check_ranges(config, **rules: str) -> None:
    """The one check of numeric settings: the first value outside its range fails with one line."""
    for name, rule in rules.items():
        value, (test, words) = getattr(config, name), RANGES[rule.rstrip("?")]
        try:
            ok = (value is None and rule.endswith("?")) or (not isinstance(value, bool) and test(value))
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"{name} must be {words}{' (or unset)' if rule.endswith('?') else ''}, got {value!r}")
