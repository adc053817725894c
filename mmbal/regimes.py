"""Training regimes of the paper's tables (paper.md §6): unimodal, ensemble, Uni-Pre frozen/finetuned.

- ``unimodal``: one encoder + linear head on one modality alone (CE only).
- ``ensemble``: one unimodal model per modality, trained separately; the fused prediction is the
  mean of their logits (``combine="logits"``, the argmax of the MLB code's sum) or of their
  probabilities (``combine="probs"``).
- ``uni_pre_frozen`` / ``uni_pre_finetuned``: encoders and heads initialised from unimodal models,
  then a fusion is trained on top with the run's objective and balancer, encoders frozen (fixed
  feature extractors in eval mode) or fine-tuned.

Every regime returns a record with the keys of a normal run. A unimodal model reports its one
head as both ``mm`` and its modality (there is no other head to report).
"""
from __future__ import annotations

import inspect
import time

import torch
import torch.nn.functional as F
from torch import nn

from mmbal.balancers import build_balancer
from mmbal.config import RunConfig
from mmbal.data import build_dataset
from mmbal.metrics import head_metrics
from mmbal.models import ENCODERS, build_model
from mmbal.objectives import OBJECTIVES, Objective
from mmbal.registry import Registry
from mmbal.train import Trainer, TrainResult, check_optim_config, resolve_device, to_device

REGIMES = Registry("regime")
COMBINE = ("logits", "probs")


class UnimodalModel(nn.Module):
    """Encoder + linear head of one modality, with the MultimodalModel interface the trainer uses."""

    def __init__(self, encoder: nn.Module, modality: str, num_classes: int):
        super().__init__()
        self.modalities = (modality,)
        self.num_classes = num_classes
        self.encoders = nn.ModuleDict({modality: encoder})
        self.heads = nn.ModuleDict({modality: nn.Linear(encoder.out_dim, num_classes)})
        self.detach_heads = False

    def forward(self, inputs: dict) -> dict:
        (m,) = self.modalities
        z = self.encoders[m](inputs[m]).mean(dim=1)            # (B, L, D) -> (B, D)
        logits = self.heads[m](z)                              # (B, C)
        return {"logits": {"mm": logits, m: logits}, "features": {m: z}, "tokens": None}

    def parameter_groups(self) -> dict[str, list]:
        (m,) = self.modalities
        return {f"encoder:{m}": list(self.encoders[m].parameters()),
                f"head:{m}": list(self.heads[m].parameters()), f"fusion:{m}": [], "fusion:shared": []}

    def modality_params(self, roles=("encoder", "head", "fusion")) -> dict[str, list]:
        groups = self.parameter_groups()
        return {m: [p for r in roles for p in groups[f"{r}:{m}"]] for m in self.modalities}


class SingleHeadObjective(Objective):
    """Cross-entropy of the single head (reported under "mm" and the modality)."""

    def __call__(self, logits, labels):
        loss = F.cross_entropy(logits["mm"], labels)
        return {k: loss for k in logits} | {"total": loss}


class EnsembleModel(nn.Module):
    """Averages the members' logits (or probabilities, returned as log-probabilities)."""

    def __init__(self, members: dict[str, UnimodalModel], combine: str = "logits"):
        super().__init__()
        self.members = nn.ModuleDict(members)
        self.modalities = tuple(members)
        self.combine = combine

    def forward(self, inputs: dict) -> dict:
        logits = {m: member(inputs)["logits"][m] for m, member in self.members.items()}   # (B, C) each
        stacked = torch.stack(list(logits.values()))                                      # (M, B, C)
        fused = stacked.mean(0) if self.combine == "logits" else \
            torch.log(torch.softmax(stacked.float(), -1).mean(0).clamp_min(1e-12))
        return {"logits": {"mm": fused, **logits}}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, num_classes: int) -> dict[str, dict]:
    """Accuracy, macro-F1 and ECE of every head of ``model`` on one loader."""
    model.eval()
    logits: dict[str, list] = {}
    labels = []
    for batch in loader:
        batch = to_device(batch, device)
        for k, v in model(batch)["logits"].items():
            logits.setdefault(k, []).append(v.float().cpu())
        labels.append(batch["label"].cpu())
    y = torch.cat(labels)
    return {k: head_metrics(torch.cat(v), y, num_classes) for k, v in logits.items()}


# -- shared pieces ------------------------------------------------------------------------------
def _prepare(cfg: RunConfig, *, needs_balancer: bool):
    """Validate everything cheap first, then build the dataset once for all phases."""
    check_optim_config(cfg.optim)
    device = resolve_device(cfg.device)
    if not needs_balancer and cfg.balancer.name != "none":
        raise ValueError(f"regime {cfg.regime!r} trains unimodal models only; use balancer 'none', "
                         f"got {cfg.balancer.name!r}")
    build_balancer(cfg.balancer.name, **cfg.balancer.options)      # fail early on bad options
    OBJECTIVES.get(cfg.objective.name)
    splits = build_dataset(cfg.data.name, seed=cfg.seed, root=cfg.data.root, **cfg.data.options)
    return device, splits


def _check_modality(modality, splits, regime: str) -> None:
    if modality not in splits.modalities:
        raise ValueError(f"{regime}: choose a modality with --regime-opt modality=NAME, one of "
                         f"{list(splits.modalities)}; got {modality!r}")


def _trainer(cfg: RunConfig, model, objective, balancer, splits, device) -> Trainer:
    return Trainer(model, objective, balancer, splits, optim=cfg.optim, batch_size=cfg.data.batch_size,
                   seed=cfg.seed, device=str(device), amp=cfg.amp, select_head="mm",
                   num_workers=cfg.data.num_workers, progress=cfg.progress)


def train_unimodal(cfg: RunConfig, modality: str, splits, device) -> tuple[Trainer, TrainResult]:
    """Train encoder + head of one modality with plain cross-entropy."""
    torch.manual_seed(cfg.seed)
    shape = splits.input_shapes()[modality]
    encoder = ENCODERS.create(cfg.model.encoder, modality=modality, input_shape=shape,
                              **cfg.model.encoder_options)
    model = UnimodalModel(encoder, modality, splits.num_classes)
    trainer = _trainer(cfg, model, SingleHeadObjective(), build_balancer("none"), splits, device)
    return trainer, trainer.fit()


def make_record(cfg: RunConfig, splits, device, result: TrainResult, **extra) -> dict:
    """A result record with the keys of ``experiments.run`` (plus regime-specific extras)."""
    from mmbal.experiments import RESULT_FORMAT, environment

    return {"format": RESULT_FORMAT, "config": cfg.to_dict(), "environment": environment(device),
            "data": {"sizes": splits.sizes(), "num_classes": splits.num_classes,
                     "modalities": list(splits.modalities)},
            "best_epoch": result.best_epoch, "seconds": result.seconds, "val": result.val,
            "test": result.test, "history": result.history, "trace": result.trace, **extra}


def _summary(result: TrainResult) -> dict:
    return {"best_epoch": result.best_epoch, "seconds": result.seconds, "val": result.val,
            "test": result.test}


# -- the regimes --------------------------------------------------------------------------------
@REGIMES.register("unimodal")
def unimodal(cfg: RunConfig, modality: str | None = None):
    """One modality alone: its encoder and a linear head, cross-entropy (modality=NAME)."""
    device, splits = _prepare(cfg, needs_balancer=False)
    _check_modality(modality, splits, "unimodal")
    trainer, result = train_unimodal(cfg, modality, splits, device)
    return make_record(cfg, splits, trainer.device, result), trainer, result


@REGIMES.register("ensemble")
def ensemble(cfg: RunConfig, combine: str = "logits"):
    """Unimodal models trained separately; fused prediction = mean of their logits (or probs)."""
    if combine not in COMBINE:
        raise ValueError(f"ensemble: combine must be one of {COMBINE}, got {combine!r}")
    device, splits = _prepare(cfg, needs_balancer=False)
    start = time.perf_counter()
    members, results, trainers = {}, {}, {}
    for m in splits.modalities:
        trainers[m], results[m] = train_unimodal(cfg, m, splits, device)
        members[m] = trainers[m].model
    model = EnsembleModel(members, combine).to(device)
    loaders = trainers[splits.modalities[0]].loaders
    val = evaluate(model, loaders["val"], device, splits.num_classes)
    test = evaluate(model, loaders["test"], device, splits.num_classes)
    n_epochs = min(len(r.history) for r in results.values())
    history = [{"epoch": e,
                "train": {f"{k.split('/')[0]}/{m}": v for m, r in results.items()
                          for k, v in r.history[e]["train"].items() if k.endswith("/mm")},
                "balancer": {},
                "val": {m: r.history[e]["val"]["mm"] for m, r in results.items()},
                "test": {m: r.history[e]["test"]["mm"] for m, r in results.items()}}
               for e in range(n_epochs)]
    trace = {"step": results[splits.modalities[0]].trace["step"],
             "epoch": results[splits.modalities[0]].trace["epoch"]}
    for r in results.values():
        trace.update({k: v for k, v in r.trace.items() if k not in ("step", "epoch")})
    result = TrainResult(history=history, trace=trace,
                         best_epoch=max(r.best_epoch for r in results.values()), val=val, test=test,
                         seconds=time.perf_counter() - start)
    record = make_record(cfg, splits, device, result,
                         members={m: _summary(r) for m, r in results.items()})
    return record, model, result


def _stay_in_eval(module: nn.Module, args) -> None:
    module.train(False)


def _uni_pre(cfg: RunConfig, *, frozen: bool):
    device, splits = _prepare(cfg, needs_balancer=True)
    start = time.perf_counter()
    pretrained = {m: train_unimodal(cfg, m, splits, device) for m in splits.modalities}
    torch.manual_seed(cfg.seed)
    model = build_model(input_shapes=splits.input_shapes(), num_classes=splits.num_classes,
                        encoder=cfg.model.encoder, fusion=cfg.model.fusion,
                        encoder_options=cfg.model.encoder_options, fusion_options=cfg.model.fusion_options)
    for m, (trainer, _) in pretrained.items():
        model.encoders[m].load_state_dict(trainer.model.encoders[m].state_dict())
        model.heads[m].load_state_dict(trainer.model.heads[m].state_dict())
        if frozen:
            model.encoders[m].requires_grad_(False)
            # A frozen encoder is a fixed feature extractor: eval mode even while the rest trains.
            model.encoders[m].register_forward_pre_hook(_stay_in_eval)
    objective = OBJECTIVES.create(cfg.objective.name, **cfg.objective.options)
    balancer = build_balancer(cfg.balancer.name, **cfg.balancer.options)
    trainer = _trainer(cfg, model, objective, balancer, splits, device)
    result = trainer.fit()
    result.seconds = time.perf_counter() - start
    record = make_record(cfg, splits, trainer.device, result,
                         pretrain={m: _summary(r) for m, (_, r) in pretrained.items()})
    return record, trainer, result


@REGIMES.register("uni_pre_frozen")
def uni_pre_frozen(cfg: RunConfig):
    """Encoders pretrained unimodally and frozen; fusion (and heads) trained on top."""
    return _uni_pre(cfg, frozen=True)


@REGIMES.register("uni_pre_finetuned")
def uni_pre_finetuned(cfg: RunConfig):
    """Encoders pretrained unimodally, then fine-tuned with the fusion (the run's objective/balancer)."""
    return _uni_pre(cfg, frozen=False)


def run_regime(cfg: RunConfig):
    """Run ``cfg.regime`` with ``cfg.regime_options``; returns (record, trainer or model, result)."""
    factory = REGIMES.get(cfg.regime)
    valid = [p for p in inspect.signature(factory).parameters if p != "cfg"]
    unknown = sorted(set(cfg.regime_options) - set(valid))
    if unknown:
        raise ValueError(f"regime {cfg.regime!r}: unknown options {unknown}; valid: {valid or 'none'}")
    return factory(cfg, **cfg.regime_options)


__all__ = ["REGIMES", "EnsembleModel", "SingleHeadObjective", "UnimodalModel", "evaluate", "run_regime",
           "train_unimodal"]
