"""Named presets, one per results table: rows (methods), columns (fusions), seeds/folds, and the
per-dataset, per-method hyperparameters of the paper (reference/paper.md §4.1-4.7, the run.sh table).

A preset is data: ``Preset.run_config(method, fusion, seed)`` turns one table cell into a ``RunConfig``.
A method is an objective + a balancer with options, or a training regime (``Method``).
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping

from mmbal.config import (BalancerConfig, DataConfig, ModelConfig, ObjectiveConfig, OptimConfig,
                          RunConfig)

PAPER_SEEDS = (109, 19, 337)     # MLB's three runs: folds 0, 1, 2 go with these seeds (§4.1)
FAST_EPOCHS = 2                  # FAST (docs/CI) runs: a smoke test of the pipeline, not a result


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

    def with_options(self, **options) -> "Method":
        return dataclasses.replace(self, options={**self.options, **options})


# The paper's rows with the objective each is defined with (hyperparameters live in the presets).
ROWS: dict[str, Method] = {
    "unimodal_audio": Method("Unimodal audio", regime="unimodal", regime_options={"modality": "audio"}),
    "unimodal_video": Method("Unimodal video", regime="unimodal", regime_options={"modality": "video"}),
    "ensemble": Method("Ensemble", regime="ensemble"),
    "joint": Method("Joint training", objective="joint"),
    "multi_loss": Method("Multi-loss", objective="multi_loss"),
    "uni_pre_frozen": Method("Uni-Pre frozen", regime="uni_pre_frozen"),
    "uni_pre_finetuned": Method("Uni-Pre finetuned", regime="uni_pre_finetuned"),
    "mslr": Method("MSLR", balancer="mslr"),
    "mmcosine": Method("MMCosine", balancer="mmcosine"),
    "ogm": Method("OGM", balancer="ogm"),
    "ogm_ge": Method("OGM-GE", balancer="ogm_ge"),
    "agm": Method("AGM", balancer="agm"),
    "pmr": Method("PMR", balancer="pmr"),
    "mlb": Method("MLB", objective="multi_loss", balancer="mlb"),
}
PAPER_ROWS = ("unimodal_audio", "unimodal_video", "ensemble", "joint", "multi_loss", "uni_pre_frozen",
              "uni_pre_finetuned", "mslr", "mmcosine", "ogm", "agm", "pmr", "mlb")


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
    # fusion -> row -> that row's balancer options at this fusion (e.g. MLB's beta per fusion)
    fusion_options: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    batch_size: int = 32
    seeds: tuple[int, ...] = PAPER_SEEDS
    fold_option: str | None = None                     # dataset option naming the fold/split
    folds: tuple[Any, ...] | None = None               # folds[i] goes with seeds[i]
    data_options: Mapping[str, Any] = field(default_factory=dict)
    encoder_options: Mapping[str, Any] = field(default_factory=dict)
    fusion_model_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # fusion -> its kwargs
    reference: str | None = None                       # column of REFERENCE_CSV (MCR Table 1)
    needs_gpu: bool = True
    linear_probe: tuple[str, ...] = ()                 # modalities whose frozen encoder gets a probe
    notes: tuple[str, ...] = ()

    @property
    def fusions(self) -> tuple[str, ...]:
        return (self.fusion, *self.ablation)

    def cells(self) -> list[tuple[str, str]]:
        """Every (method, fusion) of the table: all rows at the main fusion, then the ablation."""
        out = [(m, self.fusion) for m in self.methods]
        return out + [(m, f) for f, rows in self.ablation.items() for m in rows]

    def method(self, name: str, fusion: str | None = None) -> Method:
        """The row ``name`` with the options of ``fusion`` (e.g. MLB's beta per fusion on CREMA-D)."""
        if name not in self.methods:
            raise ValueError(f"preset {self.name!r} has no method {name!r}; valid: {', '.join(self.methods)}")
        fusion = fusion or self.fusion
        if (name, fusion) not in self.cells():
            valid = ", ".join(f for m, f in self.cells() if m == name)
            raise ValueError(f"preset {self.name!r} runs {name!r} with fusions {valid}, not {fusion!r}")
        extra = self.fusion_options.get(fusion, {}).get(name, {})
        return self.methods[name].with_options(**extra) if extra else self.methods[name]

    def fold_of(self, seed: int) -> Any:
        """The fold/split that goes with a seed (paper: folds 0, 1, 2 <-> seeds 109, 19, 337)."""
        if self.folds is None:
            return None
        if seed not in self.seeds:
            raise ValueError(f"preset {self.name!r}: seed {seed} has no fold; seeds: {self.seeds}")
        return self.folds[self.seeds.index(seed)]

    def run_config(self, method: str, fusion: str | None = None, seed: int | None = None, *,
                   fast: bool = False, epochs: int | None = None, device: str = "auto",
                   data_root: str | None = None, progress: bool = False) -> RunConfig:
        """The full RunConfig of one table cell (FAST: ``FAST_EPOCHS`` epochs, no early stopping)."""
        fusion = fusion or self.fusion
        seed = self.seeds[0] if seed is None else seed
        spec = self.method(method, fusion)
        optim = dataclasses.replace(self.optim, **dict(spec.optim))
        if fast:
            optim = dataclasses.replace(optim, epochs=FAST_EPOCHS, early_stop=None, warmup_steps=0)
        if epochs is not None:
            optim = dataclasses.replace(optim, epochs=epochs)
        data_options = dict(self.data_options)
        if self.fold_option is not None:
            data_options[self.fold_option] = self.fold_of(seed)
        cfg = RunConfig(
            data=DataConfig(name=self.dataset, root=data_root, options=data_options,
                            batch_size=self.batch_size),
            model=ModelConfig(encoder=self.encoder, fusion=fusion, encoder_options=dict(self.encoder_options),
                              fusion_options=dict(self.fusion_model_options.get(fusion, {}))),
            objective=ObjectiveConfig(name=spec.objective),
            balancer=BalancerConfig(name=spec.balancer, options=resolved_options(spec.balancer, spec.options)),
            optim=optim, seed=seed, device=device, fast=fast, progress=progress)
        return set_regime(cfg, spec.regime, dict(spec.regime_options))


def resolved_options(balancer: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The balancer's options with its factory defaults filled in, so results name every value."""
    from mmbal.balancers import BALANCERS

    if balancer not in BALANCERS:
        return dict(options)
    params = inspect.signature(BALANCERS.get(balancer)).parameters
    unknown = set(options) - set(params)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"balancer {balancer!r} has no options {sorted(unknown)}; valid: {sorted(params)}")
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    defaults = {k: p.default for k, p in params.items()
                if p.kind in kinds and p.default is not inspect.Parameter.empty}
    return {**defaults, **options}


def set_regime(cfg: RunConfig, regime: str | None, options: dict[str, Any]) -> RunConfig:
    """Put a training regime on the config (RunConfig.regime: a name, or a dataclass with name/options)."""
    if regime is None:
        return cfg
    if not hasattr(cfg, "regime"):
        raise ValueError(f"method needs the training regime {regime!r}, but this mmbal has no regimes "
                         "(RunConfig.regime is missing)")
    current = cfg.regime
    if dataclasses.is_dataclass(current):
        value = dataclasses.replace(current, name=regime, options={**getattr(current, "options", {}), **options})
        return dataclasses.replace(cfg, regime=value)
    cfg = dataclasses.replace(cfg, regime=regime)
    if options and hasattr(cfg, "regime_options"):
        cfg = dataclasses.replace(cfg, regime_options={**cfg.regime_options, **options})
    elif options:
        raise ValueError(f"regime {regime!r} needs options {options} but RunConfig has no regime_options")
    return cfg


def _rows(names, overrides: Mapping[str, Mapping[str, Any]] = (), optim: Mapping[str, Mapping[str, Any]] = ()):
    """Select rows of ROWS and attach per-method balancer options and optimiser overrides."""
    overrides, optim = dict(overrides), dict(optim)
    out = {}
    for n in names:
        m = ROWS[n].with_options(**overrides.get(n, {}))
        out[n] = dataclasses.replace(m, optim=optim[n]) if n in optim else m
    return out


_FUSION_ROWS = ("joint", "multi_loss", "mlb")
_BETA95 = ("unimodal_audio", "unimodal_video", "joint", "multi_loss")   # Conformer configs: Adam beta1 0.95
_ALL_FUSIONS = ("mlp", "film", "gated", "transformer")
_ADAM = dict(name="adam", betas=(0.9, 0.999), schedule="constant", warmup_steps=0)
_SCHEDULE_NOTE = ("The official code keeps the LR constant for 780 warm-up steps, then uses "
                  "CosineAnnealingWarmRestarts(T_0=4, T_mult=2) per step; mmbal has no warm-restart "
                  "schedule, so this preset trains at a constant LR (selection on val accuracy, early stopping).")

PRESETS: dict[str, Preset] = {}


def _add(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


_add(Preset(
    name="cremad_resnet18", title="CREMA-D, ResNet-18 (audio-video)", dataset="cremad", encoder="resnet18",
    optim=OptimConfig(lr=1e-3, weight_decay=1e-4, epochs=1500, early_stop=100, **_ADAM),
    methods=_rows(PAPER_ROWS,
                  {"agm": {"alpha": 3.0}, "ogm": {"alpha": 1.0}, "mmcosine": {"scaling": 10.0},
                   "mslr": {"keep_memory": 20, "init_scale": {"audio": 0.7, "video": 1.3}},
                   "pmr": {"alpha": 1.75}, "mlb": {"alpha": 0.5, "beta_max": 10.0}},
                  {"mlb": {"early_stop": 300}}),
    ablation={f: _FUSION_ROWS for f in _ALL_FUSIONS},
    fusion_options={"mlp": {"mlb": {"beta_max": 5.0}}, "gated": {"mlb": {"beta_max": 10.0}},
                    "film": {"mlb": {"beta_max": 20.0}}, "transformer": {"mlb": {"beta_max": 20.0}}},
    fold_option="fold", folds=(0, 1, 2), reference="cremad_resnet18",
    notes=(_SCHEDULE_NOTE, "PMR is BMVC-era only (alpha 1.75 from the old configs, where its prototype loss "
           "is active for epochs 0-70; mmbal's PMR has no end epoch); every other value is from run.sh. "
           "Early stopping: 100 epochs (300 for MLB).")))

_add(Preset(
    name="cremad_conformer", title="CREMA-D, Conformer (audio-video)", dataset="cremad", encoder="conformer",
    optim=OptimConfig(lr=5e-5, weight_decay=5e-6, epochs=1500, early_stop=100, **_ADAM), batch_size=8,
    methods=_rows(PAPER_ROWS,
                  {"agm": {"alpha": 3.0}, "ogm": {"alpha": 1.0}, "mmcosine": {"scaling": 10.0},
                   "mslr": {"keep_memory": 5, "init_scale": {"audio": 0.9, "video": 1.1}},
                   "pmr": {"alpha": 2.0}, "mlb": {"alpha": 5.0, "beta_max": None}},
                  {"mlb": {"early_stop": 300}, **{m: {"betas": (0.95, 0.999)} for m in _BETA95}}),
    ablation={f: _FUSION_ROWS for f in _ALL_FUSIONS},
    fold_option="fold", folds=(0, 1, 2), reference="cremad_conformer",
    notes=(_SCHEDULE_NOTE, "MLB uses the uncapped k = 1 + tanh(alpha (r - 1)) (no beta in run.sh). "
           "MSLR, MMCosine and PMR values are from the BMVC-era 'vit' configs. The unimodal, joint and "
           "multi-loss 'vit' configs use Adam beta1 0.95 (kept here) and 1500 warm-up steps (not modelled).",
           "The paper's Conformer encoders take wav2vec2 / EfficientNet-B2 face features; see chapter 3.")))

_add(Preset(
    name="ave_resnet18", title="AVE, ResNet-18 (audio-video)", dataset="ave", encoder="resnet18",
    optim=OptimConfig(lr=1e-3, weight_decay=1e-4, epochs=1500, early_stop=150, **_ADAM),
    methods=_rows(PAPER_ROWS,
                  {"agm": {"alpha": 3.0}, "ogm": {"alpha": 0.6}, "mmcosine": {"scaling": 10.0},
                   "mslr": {"keep_memory": 10, "init_scale": {"audio": 0.7, "video": 1.3}},
                   "pmr": {"alpha": 1.5}, "mlb": {"alpha": 2.0, "beta_max": 1.0}},
                  {"agm": {"lr": 1e-4}}),
    ablation={"mlp": ("joint", "multi_loss", "agm", "mlb")},
    fusion_options={"mlp": {"mlb": {"alpha": 1.0, "beta_max": None}, "agm": {"alpha": 2.0}}},
    reference="ave_resnet18",
    notes=(_SCHEDULE_NOTE, "AVE has one official split: only the seed changes between the three runs.",
           "run.sh passes MMCosine scaling 1, but the official code ignores that flag (paper.md §8.5): "
           "the runs used the config default 10, kept here.",
           "Mid-MLP values (MLB alpha 1.0 uncapped, AGM alpha 2.0) are from the BMVC-era print_results.sh.")))

_add(Preset(
    name="ucf101_resnet18", title="UCF101, ResNet-18 (audio-RGB, 51 classes)", dataset="ucf101",
    encoder="resnet18",
    optim=OptimConfig(lr=1e-3, weight_decay=1e-4, epochs=1000, early_stop=100, **_ADAM),
    methods=_rows(PAPER_ROWS,
                  {"agm": {"alpha": 2.0}, "ogm": {"alpha": 0.8}, "mmcosine": {"scaling": 10.0},
                   "mslr": {"keep_memory": 10, "init_scale": {"audio": 0.7, "video": 1.3}},
                   "pmr": {"alpha": 3.0}, "mlb": {"alpha": 2.0, "beta_max": 0.5}},
                  {"uni_pre_frozen": {"lr": 1e-4}, "uni_pre_finetuned": {"lr": 1e-4}}),
    fold_option="split", folds=(1, 2, 3), reference="ucf101_resnet18",
    notes=(_SCHEDULE_NOTE, "Official splits 1-3 go with seeds 109, 19, 337. MSLR has no UCF101 value in "
           "run.sh; the AVE values are used. PMR alpha 3 is from the BMVC-era configs.")))

# Digits-AV's transformer fusion, sized to the 64-d tokens of the small CNNs.
DIGITS_TRANSFORMER = {"d_model": 64, "num_heads": 4, "ffn_dim": 128}

_add(Preset(
    name="digits_av", title="Digits-AV, small CNNs (the book's CPU reproduction)", dataset="digits_av",
    encoder="small_cnn", optim=OptimConfig(),  # SGD momentum 0.9, lr 0.01, wd 1e-4, cosine, 20 epochs
    methods=_rows(("unimodal_audio", "unimodal_video", "ensemble", "joint", "multi_loss", "uni_pre_frozen",
                   "uni_pre_finetuned", "mslr", "mmcosine", "ogm", "ogm_ge", "agm", "pmr", "mlb")),
    ablation={f: _FUSION_ROWS for f in ("sum", "mlp", "film", "gated", "transformer")},
    fusion_model_options={"transformer": DIGITS_TRANSFORMER},
    needs_gpu=False,
    notes=("Transformer fusion at width 64 (4 heads, feed-forward 128, 2 layers) instead of the paper's "
           "512: the small CNNs give 64-d tokens, and a one-epoch CPU run at width 512 took 5 times as long "
           "(95 s against 18 s, 2 threads); at width 64 a run still takes about 4 times a concat run.",
           "The Digits-AV recipe of reference/data.md §6b: SGD momentum 0.9, lr 0.01, weight decay 1e-4, "
           "cosine decay over 20 epochs, batch 32, best epoch on validation accuracy.",
           "Every method uses its balancer's default hyperparameters (written into each result JSON); "
           "none was tuned on this data.")))


# -- Chapter 10: does gradient balancing survive the optimizer? -------------------------------------
ANALYSIS_OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {},                                                        # the digits_av recipe
    "adam": dict(name="adam", lr=1e-3, betas=(0.9, 0.999)),           # same decay, schedule, epochs
}
# Time-average of MLB's k over all steps of the three committed digits_av MLB runs (concat, SGD);
# tests/test_analysis.py recomputes it from those result files.
FIXED_K_DIGITS = {"audio": 0.81, "video": 1.33}
LONG_EPOCHS = 40                                                      # 2x the recipe: does MLB's edge fade?
ANALYSIS_SEEDS = (109, 19, 337, 0, 1)


def _analysis_rows() -> dict[str, Method]:
    """joint, multi-loss, OGM-GE, MLB (gradient and update form) and the fixed-k control, per optimizer,
    plus multi-loss and MLB on a schedule twice as long (SGD)."""
    base = {
        "joint": ROWS["joint"], "multi_loss": ROWS["multi_loss"], "ogm_ge": ROWS["ogm_ge"],
        "mlb": dataclasses.replace(ROWS["mlb"], label="MLB (gradient form)"),
        "mlb_update": dataclasses.replace(ROWS["mlb"], label="MLB (update form)").with_options(acts_on="update"),
        "fixed": Method("Fixed k (update form)", objective="multi_loss", balancer="fixed",
                        options={"coefficients": FIXED_K_DIGITS, "acts_on": "update"}),
    }
    rows = {}
    for opt, overrides in ANALYSIS_OPTIMIZERS.items():
        for name, m in base.items():
            rows[f"{name}_{opt}"] = dataclasses.replace(m, label=f"{m.label}, {opt.upper()}", optim=overrides)
    for name in ("multi_loss", "mlb"):
        m = base[name]
        rows[f"{name}_long_sgd"] = dataclasses.replace(m, label=f"{m.label}, SGD, {LONG_EPOCHS} epochs",
                                                       optim={"epochs": LONG_EPOCHS})
    return rows


_add(Preset(
    name="digits_av_optim", title="Digits-AV: balancing under SGD with momentum and under Adam (chapter 10)",
    dataset="digits_av", encoder="small_cnn", optim=OptimConfig(), methods=_analysis_rows(),
    seeds=ANALYSIS_SEEDS, needs_gpu=False, linear_probe=("audio", "video"),
    notes=("SGD rows: the digits_av recipe (momentum 0.9, lr 0.01, weight decay 1e-4, cosine over 20 epochs, "
           "batch 32). Adam rows: the same with Adam, lr 1e-3, betas (0.9, 0.999).",
           "Update form: k multiplies the modality's learning rate each step instead of its gradient, so "
           "Adam's normalisation cannot divide it out (chapter 6).",
           "Fixed k: MLB's time-averaged coefficients, held constant; it separates adaptive balancing from "
           "a constant bigger step for the slow modality.",
           "After training, each frozen encoder gets a logistic-regression linear probe (mmbal.probe).")))

def get_preset(name: str | Preset) -> Preset:
    """A preset by name (a ``Preset`` passes through); unknown names list the valid ones."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]


# Reference numbers: MLB and baselines re-run by the same authors, MCR paper Table 1
# (arXiv 2411.07335), accuracy % mean ± std over 3 runs (reference/paper.md §2.2). Empty = not reported.
REFERENCE_SOURCE = ("reference numbers: re-run of MLB and baselines by the same authors, "
                    "MCR paper Table 1 (arXiv 2411.07335)")
REFERENCE_CSV = """\
method,cremad_resnet18,cremad_conformer,ave_resnet18,ave_conformer,ucf101_resnet18
unimodal_audio,60.6±2.3,76.0±2.6,62.6±0.9,76.5±2.4,30.3±1.5
unimodal_video,55.4±3.0,69.4±2.0,45.7±1.6,75.5±1.2,38.5±0.9
ensemble,71.7±2.2,84.6±1.0,70.5±0.2,88.4±2.2,52.8±0.5
joint,62.6±5.8,74.6±2.2,66.7±1.5,82.2±0.8,47.7±1.5
multi_loss,69.2±1.8,82.6±0.9,70.1±0.9,86.3±1.1,51.1±1.8
uni_pre_frozen,72.4±1.8,85.0±1.8,72.2±0.3,87.2±2.4,53.0±0.9
uni_pre_finetuned,73.3±1.8,82.4±2.0,72.5±1.3,86.5±0.8,53.5±1.3
mslr,56.5±2.4,77.1±2.4,67.3±2.2,81.0±1.4,50.9±3.9
mmcosine,59.3±1.5,74.0±0.3,65.0±1.4,83.8±0.8,47.3±4.1
ogm,65.6±3.8,82.4±1.0,67.3±0.6,79.7±1.4,51.8±1.9
agm,69.3±1.4,78.5±1.6,68.4±1.1,85.3±0.5,51.0±1.6
pmr,,,,,
mlb,71.9±2.2,85.2±0.9,71.6±0.2,86.7±0.3,52.2±1.7
"""


def reference_numbers(column: str) -> dict[str, tuple[float, float] | None]:
    """Method -> (mean %, std %) of one REFERENCE_CSV column (None where not reported)."""
    lines = REFERENCE_CSV.strip().splitlines()
    header = lines[0].split(",")
    if column not in header[1:]:
        raise ValueError(f"no reference column {column!r}; valid: {', '.join(header[1:])}")
    j = header.index(column)
    out = {}
    for line in lines[1:]:
        cells = line.split(",")
        cell = cells[j]
        out[cells[0]] = tuple(float(x) for x in cell.split("±")) if cell else None
    return out
