"""The trainer: one loop for every objective and balancer (no per-method branches).

Per step: balancer.forward -> objective -> balancer.loss -> backward -> balancer.after_backward
-> optimizer.step. Per epoch: validation and test metrics of every head; the best epoch is chosen
on validation accuracy of ``select_head`` and its test metrics are the run's result.
"""
from __future__ import annotations

import copy
import math
import random
import re
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from mmbal.balancers import BALANCERS
from mmbal.balancers.base import Balancer, EpochContext
from mmbal.config import OptimConfig, RunConfig
from mmbal.data.base import DatasetSplits, make_loader
from mmbal.metrics import head_metrics
from mmbal.models import build_model
from mmbal.objectives import OBJECTIVES


def set_threads(threads: int | None, device: str = "auto") -> None:
    """CPU runs default to 1 torch thread: with shared cores, more threads are much slower."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads}")
    if threads or device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        torch.set_num_threads(threads or 1)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` (checked against the GPUs present)."""
    if not re.fullmatch(r"auto|(cpu|cuda)(:\d+)?", str(name)):
        raise ValueError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} requested but {torch.cuda.device_count()} CUDA devices are "
                         f"available; use --device cpu")
    return device


def build_optimizer(model, cfg: OptimConfig) -> torch.optim.Optimizer:
    """One parameter group per ownership group (``role:modality``), so balancers can set
    per-modality learning-rate scales; frozen parameters are left out."""
    groups = []
    for key, params in model.parameter_groups().items():
        params = [p for p in params if p.requires_grad]
        if params:
            role, modality = key.split(":")
            groups.append({"params": params, "role": role,
                           "modality": None if modality == "shared" else modality, "lr_scale": 1.0})
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def scheduled_lr(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Linear warm-up for ``warmup_steps``, then constant or cosine decay to 0 at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def predict(model, loader, device: torch.device, *, forward: Callable | None = None, key: str = "logits",
            amp: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``forward(batch)[key]`` of every head over a loader, in eval mode: ({head: (N, C)}, labels (N,)).
    ``forward`` defaults to the model; a balancer that changes the forward pass (MMCosine) passes its own.
    ``key="features"`` gives the pooled encoder features (N, D) instead of the logits."""
    model.eval()
    outputs, labels = {}, []
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = (forward or model)(batch)[key]
        for k, v in out.items():
            outputs.setdefault(k, []).append(v.float().cpu())
        labels.append(batch["label"].cpu())
    return {k: torch.cat(v) for k, v in outputs.items()}, torch.cat(labels)


def evaluate(model, loader, device: torch.device, *, num_classes: int, forward: Callable | None = None,
             amp: bool = False) -> dict[str, dict[str, float]]:
    """Accuracy, macro-F1 and ECE of every head ("mm" and each modality) over a loader."""
    logits, labels = predict(model, loader, device, forward=forward, amp=amp)
    return {k: head_metrics(v, labels, num_classes) for k, v in logits.items()}


class Diverged(FloatingPointError):
    """A non-finite training loss: the run stops; ``history`` holds the epochs finished before it."""
    history: list[dict] = []


@dataclass
class TrainResult:
    """Everything a run produced: per-epoch history, per-step trace, best epoch and its metrics."""
    history: list[dict]
    trace: dict[str, list[float]]
    best_epoch: int
    val: dict[str, dict[str, float]]
    test: dict[str, dict[str, float]]
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)      # regime extras for the record (members, pretrain)


@dataclass
class Trained:
    """A trained model with what it takes to query it: its loaders, device and forward pass."""
    model: torch.nn.Module
    loaders: dict
    device: torch.device
    forward: Callable

    def predict(self, split: str = "test", key: str = "logits"):
        return predict(self.model, self.loaders[split], self.device, forward=self.forward, key=key)


class Trainer:
    """Trains a ``MultimodalModel`` with an objective and a balancer on ``DatasetSplits``."""

    def __init__(self, model, objective, balancer: Balancer, splits: DatasetSplits, *,
                 optim: OptimConfig, batch_size: int = 32, seed: int = 0, device: str = "auto",
                 amp: bool = False, select_head: str = "mm", num_workers: int = 0,
                 progress: bool = True):
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.objective, self.balancer, self.splits = objective, balancer, splits
        self.optim_cfg, self.seed, self.progress = optim, seed, progress
        self.amp = amp and self.device.type == "cuda"
        if select_head != "mm" and select_head not in model.modalities:
            raise ValueError(f"select_head must be 'mm' or one of {model.modalities}, got {select_head!r}")
        self.select_head = select_head
        loader = partial(make_loader, seed=seed, num_workers=num_workers, pin_memory=self.device.type == "cuda")
        self.loaders = {"train": loader(splits.train, batch_size=batch_size, shuffle=True),
                        "val": loader(splits.val, batch_size=2 * batch_size, shuffle=False),
                        "test": loader(splits.test, batch_size=2 * batch_size, shuffle=False)}
        self.objective.configure(self.model)
        self.optimizer = build_optimizer(self.model, optim)
        self.balancer.setup(self.model, self.optimizer)
        self.total_steps = optim.epochs * len(self.loaders["train"])

    @classmethod
    def from_config(cls, cfg: RunConfig, model, objective, balancer: Balancer, splits: DatasetSplits,
                    select_head: str | None = None) -> "Trainer":
        """A trainer with the optimisation, batching and device settings of ``cfg``."""
        return cls(model, objective, balancer, splits, optim=cfg.optim, batch_size=cfg.data.batch_size,
                   seed=cfg.seed, device=cfg.device, amp=cfg.amp, select_head=select_head or cfg.select_head,
                   num_workers=cfg.data.num_workers, progress=cfg.progress)

    @property
    def trained(self) -> Trained:
        return Trained(self.model, self.loaders, self.device, partial(self.balancer.forward, self.model))

    def _step(self, batch: dict, step: int) -> tuple[dict, dict, dict]:
        labels = batch["label"]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            outputs = self.balancer.forward(self.model, batch)
            losses = self.balancer.loss(outputs, labels, self.objective(outputs["logits"], labels))
        if not torch.isfinite(losses["total"]):
            raise Diverged(f"training diverged: the loss is {losses['total'].item()} at step {step + 1} of "
                           f"{self.total_steps}; try a lower lr or a grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        trace = self.balancer.after_backward(self.model, outputs, labels)
        if self.optim_cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.grad_clip)
        lr = scheduled_lr(self.optim_cfg, step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.optimizer.step()
        return outputs, losses, trace

    def _train_epoch(self, epoch: int, step: int, trace: dict[str, list]) -> tuple[dict, int]:
        self.model.train()
        self.splits.train.set_epoch(epoch)
        sums, count = {}, 0                          # sums: {"loss/<name>" | "accuracy/<head>": tensor}
        for batch in tqdm(self.loaders["train"], desc=f"epoch {epoch + 1}/{self.optim_cfg.epochs}",
                          leave=False, disable=not self.progress):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            outputs, losses, step_trace = self._step(batch, step)
            n = len(batch["label"])
            for k, v in losses.items():
                sums[f"loss/{k}"] = sums.get(f"loss/{k}", 0.0) + v.detach().float() * n
            for k, v in outputs["logits"].items():
                hits = (v.detach().argmax(1) == batch["label"]).sum().float()
                sums[f"accuracy/{k}"] = sums.get(f"accuracy/{k}", 0.0) + hits
            count += n
            trace.setdefault("step", []).append(step)
            trace.setdefault("epoch", []).append(epoch)
            for k, v in step_trace.items():
                trace.setdefault(k, []).append(torch.as_tensor(v).detach().float().reshape(()))
            step += 1
        return {k: (v / count).item() for k, v in sums.items()}, step

    def fit(self) -> TrainResult:
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        torch.manual_seed(self.seed)
        start = time.perf_counter()
        history, trace, step = [], {}, 0
        best = {"epoch": -1, "score": -1.0, "state": None}
        for epoch in tqdm(range(self.optim_cfg.epochs), desc="training", disable=not self.progress):
            ctx = EpochContext(epoch=epoch, model=self.model, train_loader=self.loaders["train"],
                               device=self.device, history=history)
            balancer_epoch = {k: float(v) for k, v in self.balancer.begin_epoch(ctx).items()}
            try:
                train_stats, step = self._train_epoch(epoch, step, trace)
            except Diverged as err:
                err.history = history               # the epochs before the divergence, for the record
                raise
            record = {"epoch": epoch, "train": train_stats, "balancer": balancer_epoch,
                      **{split: evaluate(self.model, self.loaders[split], self.device, forward=self.trained.forward,
                                         num_classes=self.model.num_classes, amp=self.amp)
                         for split in ("val", "test")},
                      "seconds": time.perf_counter() - start}
            history.append(record)
            score = record["val"][self.select_head]["accuracy"]
            if score > best["score"]:
                best = {"epoch": epoch, "score": score,
                        "state": copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})}
            if self.optim_cfg.early_stop and epoch - best["epoch"] >= self.optim_cfg.early_stop:
                break                               # early_stop epochs in a row without a better val score
        self.model.load_state_dict(best["state"])
        columns = {k: (torch.stack(v).tolist() if v and isinstance(v[0], torch.Tensor) else v)
                   for k, v in trace.items()}
        chosen = history[best["epoch"]]
        return TrainResult(history=history, trace=columns, best_epoch=best["epoch"],
                           val=chosen["val"], test=chosen["test"], seconds=time.perf_counter() - start)


def seeded_model(cfg: RunConfig, splits: DatasetSplits):
    """The model of ``cfg``, built right after ``torch.manual_seed(cfg.seed)``: a seed gives its weights."""
    torch.manual_seed(cfg.seed)
    return build_model(input_shapes=splits.input_shapes(), num_classes=splits.num_classes,
                       encoder=cfg.model.encoder, fusion=cfg.model.fusion,
                       encoder_options=cfg.model.encoder_options, fusion_options=cfg.model.fusion_options)


def build_trainer(cfg: RunConfig, splits: DatasetSplits, *, model=None) -> Trainer:
    """The trainer of ``cfg`` on ``splits``: objective, balancer and (unless given) the seeded model."""
    objective = OBJECTIVES.create(cfg.objective.name, **cfg.objective.options)
    balancer = BALANCERS.create(cfg.balancer.name, **cfg.balancer.options)
    return Trainer.from_config(cfg, model if model is not None else seeded_model(cfg, splits),
                               objective, balancer, splits)
