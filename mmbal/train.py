"""The trainer: one loop for every objective and balancer (no per-method branches).

Per step: balancer.forward -> objective -> balancer.loss -> backward -> balancer.after_backward
-> optimizer.step. Per epoch: validation and test metrics of every head; the best epoch is chosen
on validation accuracy of ``select_head`` and its test metrics are the run's result.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from mmbal.balancers.base import Balancer, EpochContext
from mmbal.config import OptimConfig
from mmbal.data.base import DatasetSplits, make_loader
from mmbal.metrics import head_metrics

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def check_optim_config(cfg: OptimConfig) -> None:
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.name!r}; valid: {', '.join(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")
    if not cfg.lr > 0 or cfg.epochs < 1 or cfg.weight_decay < 0:
        raise ValueError(f"need lr > 0, epochs >= 1, weight_decay >= 0; got lr={cfg.lr}, "
                         f"epochs={cfg.epochs}, weight_decay={cfg.weight_decay}")


def build_optimizer(model, cfg: OptimConfig) -> torch.optim.Optimizer:
    """One parameter group per ownership group (``role:modality``), so balancers can set
    per-modality learning-rate scales; frozen parameters are left out."""
    check_optim_config(cfg)
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


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class TrainResult:
    """Everything a run produced: per-epoch history, per-step trace, best epoch and its metrics."""

    history: list[dict]
    trace: dict[str, list[float]]
    best_epoch: int
    val: dict[str, dict[str, float]]
    test: dict[str, dict[str, float]]
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


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
        pin = self.device.type == "cuda"
        self.loaders = {
            "train": make_loader(splits.train, batch_size=batch_size, shuffle=True, seed=seed,
                                 num_workers=num_workers, pin_memory=pin),
            "val": make_loader(splits.val, batch_size=2 * batch_size, shuffle=False, seed=seed,
                               num_workers=num_workers, pin_memory=pin),
            "test": make_loader(splits.test, batch_size=2 * batch_size, shuffle=False, seed=seed,
                                num_workers=num_workers, pin_memory=pin)}
        self.objective.configure(self.model)
        self.optimizer = build_optimizer(self.model, optim)
        self.balancer.setup(self.model, self.optimizer)
        self.total_steps = optim.epochs * len(self.loaders["train"])

    # -- one training step ------------------------------------------------------------------
    def _step(self, batch: dict, step: int) -> tuple[dict, dict, dict]:
        labels = batch["label"]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            outputs = self.balancer.forward(self.model, batch)
            losses = self.objective(outputs["logits"], labels)
            losses = self.balancer.loss(outputs, labels, losses)
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
        sums: dict[str, torch.Tensor] = {}
        count = 0
        bar = tqdm(self.loaders["train"], desc=f"epoch {epoch + 1}/{self.optim_cfg.epochs}",
                   leave=False, disable=not self.progress)
        for batch in bar:
            batch = to_device(batch, self.device)
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

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, dict[str, float]]:
        """Accuracy, macro-F1 and ECE of every head ("mm" and each modality) on a split."""
        self.model.eval()
        logits: dict[str, list] = {}
        labels = []
        for batch in self.loaders[split]:
            batch = to_device(batch, self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = self.balancer.forward(self.model, batch)
            for k, v in out["logits"].items():
                logits.setdefault(k, []).append(v.float().cpu())
            labels.append(batch["label"].cpu())
        y = torch.cat(labels)
        return {k: head_metrics(torch.cat(v), y, self.model.num_classes) for k, v in logits.items()}

    def fit(self) -> TrainResult:
        import time

        seed_everything(self.seed)
        start = time.perf_counter()
        history: list[dict] = []
        trace: dict[str, list] = {}
        best = {"epoch": -1, "score": -1.0, "state": None}
        step, stale = 0, 0
        epochs = range(self.optim_cfg.epochs)
        for epoch in tqdm(epochs, desc="training", disable=not self.progress):
            ctx = EpochContext(epoch=epoch, model=self.model, train_loader=self.loaders["train"],
                               device=self.device, history=history)
            balancer_epoch = {k: float(v) for k, v in self.balancer.on_epoch_start(ctx).items()}
            train_stats, step = self._train_epoch(epoch, step, trace)
            record = {"epoch": epoch, "train": train_stats, "balancer": balancer_epoch,
                      "val": self.evaluate("val"), "test": self.evaluate("test"),
                      "seconds": time.perf_counter() - start}
            history.append(record)
            score = record["val"][self.select_head]["accuracy"]
            if score > best["score"]:
                best = {"epoch": epoch, "score": score,
                        "state": copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})}
                stale = 0
            else:
                stale += 1
                if self.optim_cfg.early_stop and stale >= self.optim_cfg.early_stop:
                    break
        self.model.load_state_dict(best["state"])
        columns = {k: (torch.stack(v).tolist() if v and isinstance(v[0], torch.Tensor) else v)
                   for k, v in trace.items()}
        chosen = history[best["epoch"]]
        return TrainResult(history=history, trace=columns, best_epoch=best["epoch"],
                           val=chosen["val"], test=chosen["test"], seconds=time.perf_counter() - start)
