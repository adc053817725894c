"""Named presets, one per results table, read from ``presets.yaml``: rows (methods), fusion columns,
seeds/folds and the per-method hyperparameters with their sources. ``Preset.run_config(method, fusion,
seed)`` turns one table cell into a ``RunConfig``; ``Preset.hyperparameters()`` prints every value."""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import yaml

from mmbal.balancers import BALANCERS
from mmbal.config import BalancerConfig, DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, RunConfig

_HERE = Path(__file__).parent
_DATA = yaml.safe_load((_HERE / "presets.yaml").read_text(encoding="utf-8"))
_CONST = _DATA["constants"]
PAPER_SEEDS: tuple[int, ...] = tuple(_CONST["paper_seeds"])   # MLB's three runs: folds 0, 1, 2 go with these
FAST_EPOCHS = 2                    # FAST (docs/CI) runs: a smoke test of the pipeline, not a result
FIXED_K_DIGITS: dict[str, float] = _CONST["fixed_k_digits"]   # chapter 10: MLB's time-averaged k
LONG_EPOCHS: int = _CONST["long_epochs"]                       # chapter 10: 2x the digits_av recipe
FIXED_K_DIGITS_V2: dict[str, float] = _CONST["fixed_k_digits_v2"]   # the same on Digits-AV v2
LONG_EPOCHS_V2: int = _CONST["long_epochs_v2"]                       # 2x the digits_av_v2 recipe
DATASET_SHAPES: dict[str, dict] = _DATA["dataset_shapes"]     # input shapes, split sizes: ``mmbal table estimate``
DEFAULT_SOURCE = "mmbal's default for this balancer"


def _optim(raw: Mapping[str, Any]) -> dict[str, Any]:
    """OptimConfig values from YAML, lists as tuples; unknown names and numbers read as text fail."""
    if text := sorted(k for k, v in raw.items() if isinstance(v, str) and k not in ("name", "schedule")):
        raise ValueError(f"optim {text} must be numbers (YAML reads 1e-3 as text: write 1.0e-3)")
    OptimConfig(**raw)                                            # unknown names and bad values fail here
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


@dataclass(frozen=True)
class Method:
    """One table row: objective + balancer (+ options), or a regime (unimodal, ensemble, uni-pre)."""
    label: str
    objective: str = "joint"
    balancer: str = "none"
    options: Mapping[str, Any] = field(default_factory=dict)        # balancer options (alpha, beta_max, ...)
    regime: str | None = None
    regime_options: Mapping[str, Any] = field(default_factory=dict)
    optim: Mapping[str, Any] = field(default_factory=dict)          # per-method OptimConfig overrides
    encoder_options: Mapping[str, Any] = field(default_factory=dict)  # per-method encoder overrides


ROWS: dict[str, Method] = {name: Method(**spec) for name, spec in _DATA["rows"].items()}   # the paper's rows
ANALYSIS_OPTIMIZERS = {k: _optim(v) for k, v in _CONST["analysis_optimizers"].items()}   # chapter 10


@dataclass(frozen=True)
class Preset:
    """One results table: dataset + backbone + optimisation, its rows, fusion columns and seeds."""
    name: str
    title: str
    dataset: str
    encoder: str
    optim: OptimConfig
    methods: Mapping[str, Method]                      # rows, at the main fusion
    fusion: str = "concat"                             # main column (late linear fusion)
    ablation: Mapping[str, tuple[str, ...]] = field(default_factory=dict)   # extra fusion -> its rows
    fusion_options: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)  # fusion->row->options
    batch_size: int = 32
    select_head: str = "mm"                            # head whose val accuracy selects the epoch
    seeds: tuple[int, ...] = PAPER_SEEDS
    fold_option: str | None = None                     # dataset option naming the fold/split
    folds: tuple[Any, ...] | None = None               # folds[i] goes with seeds[i]
    data_options: Mapping[str, Any] = field(default_factory=dict)
    encoder_options: Mapping[str, Any] = field(default_factory=dict)
    fusion_model_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # fusion -> its kwargs
    reference: str | None = None                       # column of presets_reference.csv (MCR Table 1)
    needs_gpu: bool = True
    linear_probe: tuple[str, ...] = ()                 # modalities whose frozen encoder gets a probe (every row)
    notes: tuple[str, ...] = ()
    source: str = "not stated"                         # the source of every value ...
    sources: Mapping[str, str] = field(default_factory=dict)   # ... but these paths (longest prefix wins)

    @property
    def fusions(self) -> tuple[str, ...]:
        return (self.fusion, *self.ablation)

    def cells(self) -> list[tuple[str, str]]:
        """Every (method, fusion) of the table: all rows at the main fusion, then the ablation."""
        return [(m, self.fusion) for m in self.methods] + [(m, f) for f, rows in self.ablation.items() for m in rows]

    def method(self, name: str, fusion: str | None = None) -> Method:
        """The row ``name`` with the options of ``fusion`` (e.g. MLB's beta per fusion on CREMA-D)."""
        if name not in self.methods:
            raise ValueError(f"preset {self.name!r} has no method {name!r}; valid: {', '.join(self.methods)}")
        fusion = fusion or self.fusion
        if (name, fusion) not in self.cells():
            valid = ", ".join(f for m, f in self.cells() if m == name)
            raise ValueError(f"preset {self.name!r} runs {name!r} with fusions {valid}, not {fusion!r}")
        row = self.methods[name]
        return replace(row, options={**row.options, **self.fusion_options.get(fusion, {}).get(name, {})})

    def fold_of(self, seed: int) -> Any:
        """The fold/split that goes with a seed (paper: folds 0, 1, 2 <-> seeds 109, 19, 337)."""
        if self.folds is not None and seed not in self.seeds:
            raise ValueError(f"preset {self.name!r}: seed {seed} has no fold; seeds: {self.seeds}")
        return None if self.folds is None else self.folds[self.seeds.index(seed)]

    def run_config(self, method: str, fusion: str | None = None, seed: int | None = None, *,
                   fast: bool = False, epochs: int | None = None, device: str = "auto",
                   data_root: str | None = None, progress: bool = False) -> RunConfig:
        """The full RunConfig of one table cell (FAST: ``FAST_EPOCHS`` epochs, no early stopping)."""
        fusion = fusion or self.fusion
        seed = self.seeds[0] if seed is None else seed
        spec = self.method(method, fusion)
        optim = {**spec.optim, **({"epochs": FAST_EPOCHS, "early_stop": None, "warmup_steps": 0} if fast else {}),
                 **({} if epochs is None else {"epochs": epochs})}
        fold = {} if self.fold_option is None else {self.fold_option: self.fold_of(seed)}
        return RunConfig(
            data=DataConfig(name=self.dataset, root=data_root, options={**self.data_options, **fold},
                            batch_size=self.batch_size),
            model=ModelConfig(encoder=self.encoder, fusion=fusion,
                              encoder_options={**self.encoder_options, **spec.encoder_options},
                              fusion_options=dict(self.fusion_model_options.get(fusion, {}))),
            objective=ObjectiveConfig(name=spec.objective),
            balancer=BalancerConfig(name=spec.balancer, options=resolved_options(spec.balancer, spec.options)),
            optim=replace(self.optim, **optim), seed=seed, device=device, fast=fast, progress=progress,
            select_head=self.select_head,
            regime=spec.regime, regime_options=dict(spec.regime_options))

    def hyperparameters(self) -> pd.DataFrame:
        """Every value with its source: columns method, fusion, parameter, value, source (``all``: shared)."""
        rows = [(m, f, p, _fmt(v), self.source_of(path) if path else DEFAULT_SOURCE)
                for m, f, p, v, path in self._entries()]
        return pd.DataFrame(rows, columns=["method", "fusion", "parameter", "value", "source"])

    def source_of(self, path: str) -> str:
        """The source of the value at ``path``: its longest prefix in ``sources``, else ``source``."""
        keys = [k for k in self.sources if f"{path}.".startswith(f"{k}.")]          # k is path or a parent of it
        return self.sources[max(keys, key=len)] if keys else self.source

    def _entries(self) -> list[tuple[str, str, str, Any, str | None]]:
        """(method, fusion, parameter, value, path in presets.yaml; None for a balancer default)."""
        out = [("all", "all", p, getattr(self, p), p) for p in ("batch_size", "select_head", "seeds")]
        out += [("all", "all", self.fold_option, self.folds, "folds")] if self.fold_option is not None else []
        unused = {"optim.betas" if self.optim.name == "sgd" else "optim.momentum"} | (
            set() if self.optim.schedule == "cosine_restarts" else {"optim.restart_period", "optim.restart_mult"})
        groups = {"optim": asdict(self.optim), "data_options": self.data_options,
                  "encoder_options": self.encoder_options, "fusion_model_options": self.fusion_model_options}
        out += [("all", "all", f"{g}.{k}", v, f"{g}.{k}") for g, values in groups.items() for k, v in values.items()
                if f"{g}.{k}" not in unused]
        for name, m in self.methods.items():
            kind = " + ".join(x for x in (m.objective, m.balancer) if x != "none")
            regime = f"regime {m.regime}" + (f" ({_fmt(m.regime_options)})" if m.regime_options else "")
            out.append((name, "all", "method", regime if m.regime else kind, f"methods.{name}"))
            out += [(name, "all", f"{g}.{k}", v, f"methods.{name}.{g}.{k}") for g in ("optim", "encoder_options")
                    for k, v in getattr(m, g).items()]
            options = resolved_options(m.balancer, m.options) if m.balancer != "none" else m.options
            out += [(name, "all", k, v, f"methods.{name}.options.{k}" if k in m.options else None)
                    for k, v in options.items()]
        return out + [(m, f, k, v, f"fusion_options.{f}.{m}.{k}") for f, per in self.fusion_options.items()
                      for m, options in per.items() for k, v in options.items()]


def _fmt(value: Any) -> str:
    """A value as table text: 0.001; audio 0.7, video 1.3; 109, 19, 337; None."""
    if isinstance(value, Mapping):
        value = [f"{k} {v}" for k, v in value.items()]
    return ", ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def resolved_options(balancer: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The balancer's options with its defaults filled in, so results name every value."""
    return {**BALANCERS.defaults(balancer), **options} if balancer in BALANCERS else dict(options)


def _method(name: str, spec: Mapping[str, Any] | None) -> Method:
    """A preset's row: the row ``from`` of ROWS (default: ``name``) with overrides, or a new labelled row."""
    spec = dict(spec or {})
    base = ROWS.get(spec.pop("from", name))
    if base is None and "label" not in spec:
        raise ValueError(f"method {name!r} is not a row of ROWS ({', '.join(ROWS)}) and has no label")
    base = base or Method(label=spec["label"])
    options, optim = {**base.options, **spec.pop("options", {})}, {**base.optim, **spec.pop("optim", {})}
    try:
        return replace(base, **spec, options=options, optim=_optim(optim))
    except (TypeError, ValueError) as e:
        raise ValueError(f"method {name!r}: {e}") from None


def _preset(name: str, raw: Mapping[str, Any]) -> Preset:
    """One preset of presets.yaml, checked: keys, rows, optimiser, each cell's balancer, source paths."""
    try:
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        kw["ablation"] = {f: tuple(rows) for f, rows in raw.get("ablation", {}).items()}
        kw["methods"] = {m: _method(m, spec) for m, spec in raw["methods"].items()}
        preset = Preset(name=name, **{**kw, "optim": OptimConfig(**_optim(raw["optim"]))})
        for m, f in [*preset.cells(), *((m, f) for f, per in preset.fusion_options.items() for m in per)]:
            spec = preset.method(m, f)
            BALANCERS.create(spec.balancer, **spec.options)                    # option names are real
        paths = [f"{path}." for *_, path in preset._entries() if path]
        unknown = [k for k in preset.sources if not any(p.startswith(f"{k}.") for p in paths)]
        if unknown or (preset.folds is not None and len(preset.folds) != len(preset.seeds)):
            raise ValueError(f"sources {unknown} name no value" if unknown else "folds and seeds differ in length")
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"presets.yaml, preset {name!r}: {'missing key ' * isinstance(e, KeyError)}{e}") from None
    return preset


PRESETS: dict[str, Preset] = {name: _preset(name, raw) for name, raw in _DATA["presets"].items()}


def get_preset(name: str | Preset) -> Preset:
    """A preset by name (a ``Preset`` passes through); unknown names list the valid ones."""
    if not isinstance(name, Preset) and name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return name if isinstance(name, Preset) else PRESETS[name]


_REFERENCE = (_HERE / "presets_reference.csv").read_text(encoding="utf-8").splitlines()
REFERENCE_SOURCE = _REFERENCE[0].removeprefix("# ")           # MCR paper Table 1, re-run by MLB's authors


def reference_numbers(column: str) -> dict[str, tuple[float, float] | None]:
    """Method -> (mean %, std %) of one column of presets_reference.csv (None where not reported)."""
    rows = list(csv.DictReader(line for line in _REFERENCE if not line.startswith("#")))
    if column == "method" or column not in rows[0]:
        raise ValueError(f"no reference column {column!r}; valid: {', '.join(list(rows[0])[1:])}")
    return {r["method"]: tuple(float(x) for x in r[column].split("±")) if r[column] else None for r in rows}
