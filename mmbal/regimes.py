"""Training regimes of the paper's tables: unimodal, ensemble, Uni-Pre frozen/finetuned. A regime returns
``(TrainResult, Trained)`` like a plain run, so ``mmbal.experiments.run`` writes the same record; a unimodal
model reports its one head as both ``mm`` and its modality (there is no other head to report)."""
from __future__ import annotations

import time

import torch

from mmbal.balancers import BALANCERS
from mmbal.config import RunConfig
from mmbal.data.base import DatasetSplits
from mmbal.models import ENCODERS, EnsembleModel, UnimodalModel
from mmbal.objectives import SingleHeadObjective
from mmbal.registry import Registry
from mmbal.train import Trained, Trainer, TrainResult, build_trainer, evaluate, seeded_model

REGIMES = Registry("regime")
COMBINE = ("logits", "probs")


def _single_modality_regime(cfg: RunConfig, regime: str) -> None:
    if cfg.balancer.name != "none":
        raise ValueError(f"regime {regime!r} trains unimodal models only; use balancer 'none', "
                         f"got {cfg.balancer.name!r}")


def train_unimodal(cfg: RunConfig, modality: str, splits: DatasetSplits) -> tuple[TrainResult, Trained]:
    """Train encoder + head of one modality with plain cross-entropy."""
    if modality not in splits.modalities:
        raise ValueError(f"choose a modality with --regime-opt modality=NAME, one of "
                         f"{list(splits.modalities)}; got {modality!r}")
    torch.manual_seed(cfg.seed)
    encoder = ENCODERS.create(cfg.model.encoder, modality=modality, input_shape=splits.input_shapes()[modality],
                              **cfg.model.encoder_options)
    trainer = Trainer.from_config(cfg, UnimodalModel(encoder, modality, splits.num_classes),
                                  SingleHeadObjective(), BALANCERS.create("none"), splits, select_head="mm")
    return trainer.fit(), trainer.trained


def _summary(result: TrainResult) -> dict:
    return {"best_epoch": result.best_epoch, "seconds": result.seconds, "val": result.val, "test": result.test}


@REGIMES.register("unimodal")
def unimodal(cfg: RunConfig, splits: DatasetSplits, modality: str | None = None):
    """One modality alone: its encoder and a linear head, cross-entropy (modality=NAME)."""
    _single_modality_regime(cfg, "unimodal")
    return train_unimodal(cfg, modality, splits)


@REGIMES.register("ensemble")
def ensemble(cfg: RunConfig, splits: DatasetSplits, combine: str = "logits"):
    """Unimodal models trained separately; fused prediction = mean of their logits (``combine="logits"``,
    the argmax of the MLB code's sum) or of their probabilities (``combine="probs"``)."""
    if combine not in COMBINE:
        raise ValueError(f"ensemble: combine must be one of {COMBINE}, got {combine!r}")
    _single_modality_regime(cfg, "ensemble")
    start = time.perf_counter()
    members = {m: train_unimodal(cfg, m, splits) for m in splits.modalities}
    first = members[splits.modalities[0]][1]
    model = EnsembleModel({m: t.model for m, (_, t) in members.items()}, combine).to(first.device)
    val, test = (evaluate(model, first.loaders[s], first.device, num_classes=splits.num_classes)
                 for s in ("val", "test"))
    results = {m: r for m, (r, _) in members.items()}
    history = [{"epoch": e,
                "train": {f"{k.split('/')[0]}/{m}": v for m, r in results.items()
                          for k, v in r.history[e]["train"].items() if k.endswith("/mm")},
                "balancer": {}, **{s: {m: r.history[e][s]["mm"] for m, r in results.items()} for s in ("val", "test")}}
               for e in range(min(len(r.history) for r in results.values()))]
    trace = {**results[splits.modalities[0]].trace,             # step and epoch of the first, then every score
             **{k: v for r in results.values() for k, v in r.trace.items() if k not in ("step", "epoch")}}
    result = TrainResult(history=history, trace=trace, best_epoch=max(r.best_epoch for r in results.values()),
                         val=val, test=test, seconds=time.perf_counter() - start,
                         extra={"members": {m: _summary(r) for m, r in results.items()}})
    return result, Trained(model, first.loaders, first.device, model)


def _stay_in_eval(module: torch.nn.Module, args) -> None:
    module.train(False)


def _uni_pre(cfg: RunConfig, splits: DatasetSplits, *, frozen: bool):
    start = time.perf_counter()
    pretrained = {m: train_unimodal(cfg, m, splits) for m in splits.modalities}
    model = seeded_model(cfg, splits)
    for m, (_, trained) in pretrained.items():
        model.encoders[m].load_state_dict(trained.model.encoders[m].state_dict())
        model.heads[m].load_state_dict(trained.model.heads[m].state_dict())
        if frozen:
            model.encoders[m].requires_grad_(False)
            # A frozen encoder is a fixed feature extractor: eval mode even while the rest trains.
            model.encoders[m].register_forward_pre_hook(_stay_in_eval)
    result = (trainer := build_trainer(cfg, splits, model=model)).fit()
    result.seconds = time.perf_counter() - start
    result.extra["pretrain"] = {m: _summary(r) for m, (r, _) in pretrained.items()}
    return result, trainer.trained


@REGIMES.register("uni_pre_frozen")
def uni_pre_frozen(cfg: RunConfig, splits: DatasetSplits):
    """Encoders and heads from unimodal models, encoders frozen (fixed feature extractors in eval mode);
    fusion (and heads) trained on top with the run's objective and balancer."""
    return _uni_pre(cfg, splits, frozen=True)


@REGIMES.register("uni_pre_finetuned")
def uni_pre_finetuned(cfg: RunConfig, splits: DatasetSplits):
    """Encoders pretrained unimodally, then fine-tuned with the fusion (the run's objective/balancer)."""
    return _uni_pre(cfg, splits, frozen=False)
