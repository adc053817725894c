"""The trainer: one loop for every objective and balancer (no per-method branches).

Per step: balancer.forward -> objective -> balancer.loss -> backward -> balancer.after_backward
-> optimizer.step. Per epoch: validation and test metrics of every head; the best epoch is chosen
on validation accuracy of ``select_head`` and its test metrics are the run's result.
"""
from __future__ import annotations

import copy
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import torch
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm

from mmbal.balancers import BALANCERS
from mmbal.balancers.base import Balancer, EpochContext
from mmbal.config import OptimConfig, RunConfig
from mmbal.distributed import global_sum, is_main, local_rank, world_size, wrap
from mmbal.data.base import DatasetSplits, holdout_split, make_loader
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
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank())          # torchrun: this rank's GPU (0 in one process)
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
    """Linear warm-up for ``warmup_steps``, then constant or cosine decay to 0 at the last step; or, for
    ``cosine_restarts`` (MLB code: WarmupScheduler + CosineAnnealingWarmRestarts stepped with the global step),
    the base lr for ``warmup_steps``, then windows of T_0 * T_mult^n steps counted from step 0."""
    if cfg.schedule == "cosine_restarts":
        t, period = step, cfg.restart_period                 # T_cur, T_i: find the window holding ``step``
        while t >= period:
            t, period = t - period, period * cfg.restart_mult
        return cfg.lr if step < cfg.warmup_steps else cfg.lr * 0.5 * (1.0 + math.cos(math.pi * t / period))
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
                 amp: bool = False, select_head: str = "mm", num_workers: int = 0, progress: bool = True,
                 channels_last: bool = False, compile: bool = False, checkpoint: str | None = None,
                 checkpoint_every: int = 0):
        self.device = resolve_device(device)
        self.channels_last = channels_last and self.device.type == "cuda"
        self.model = model.to(self.device)
        if self.channels_last:                      # NHWC convolutions (tensor cores); batches follow in _train_epoch
            self.model.to(memory_format=torch.channels_last)
        if compile:
            self.model.compile()                    # in place: same module, attributes and state_dict keys
        self.ddp, self.world = wrap(self.model, self.device), world_size()   # the model itself in one process
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True   # fixed input shapes: pick the fastest convolution once
        splits, held_out = holdout_split(splits, balancer.holdout, seed)    # a part of train the balancer keeps out
        self.objective, self.balancer, self.splits = objective, balancer, splits
        self.optim_cfg, self.seed, self.progress = optim, seed, progress
        self.amp = amp and self.device.type == "cuda"
        if select_head != "mm" and select_head not in model.modalities:
            raise ValueError(f"select_head must be 'mm' or one of {model.modalities}, got {select_head!r}")
        self.select_head = select_head
        loader = partial(make_loader, seed=seed, num_workers=num_workers, pin_memory=self.device.type == "cuda")
        self.loaders = {"train": loader(splits.train, batch_size=batch_size, shuffle=True),
                        "val": loader(splits.val, batch_size=2 * batch_size, shuffle=False),
                        "test": loader(splits.test, batch_size=2 * batch_size, shuffle=False),
                        **({"holdout": loader(held_out, batch_size=2 * batch_size, shuffle=False)} if held_out else {})}
        self.objective.configure(self.model)
        self.optimizer = build_optimizer(self.model, optim)
        self.balancer.setup(self.model, self.optimizer)
        self.total_steps = optim.epochs * len(self.loaders["train"])

    @classmethod
    def from_config(cls, cfg: RunConfig, model, objective, balancer: Balancer, splits: DatasetSplits,
                    select_head: str | None = None, **options) -> "Trainer":
        """A trainer with the optimisation, batching and device settings of ``cfg`` (``options``: checkpoint, ...)."""
        return cls(model, objective, balancer, splits, optim=cfg.optim, batch_size=cfg.data.batch_size,
                   seed=cfg.seed, device=cfg.device, amp=cfg.amp, select_head=select_head or cfg.select_head,
                   channels_last=cfg.channels_last, compile=cfg.compile,
                   num_workers=cfg.data.num_workers, progress=cfg.progress, **options)

    @property
    def trained(self) -> Trained:
        return Trained(self.model, self.loaders, self.device, partial(self.balancer.forward, self.model))

    def _step(self, batch: dict, step: int) -> tuple[dict, dict, dict]:
        labels = batch["label"]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            outputs = self.balancer.forward(self.ddp, batch)
            losses = self.balancer.loss(outputs, labels, self.objective(outputs["logits"], labels))
        if self.device.type != "cuda" and not torch.isfinite(losses["total"]):     # CUDA: per epoch, no host sync
            raise Diverged(f"training diverged: the loss is {losses['total'].item()} at step {step + 1} of "
                           f"{self.total_steps}; try a lower lr or a grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        if self.world == 1:
            losses["total"].backward()
        else:                                       # DDP averages gradients: weight ranks by their share of the batch
            n = torch.tensor(float(len(labels)), device=self.device)
            (losses["total"] * (n * self.world / global_sum(n))).backward()
        trace = self.balancer.after_backward(self.ddp, outputs, labels)
        if self.optim_cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.grad_clip)
        lr = scheduled_lr(self.optim_cfg, step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.optimizer.step()
        return outputs, losses, trace

    def _train_epoch(self, epoch: int, resumed: dict | None = None) -> dict:
        """One epoch (from batch ``resumed["batches"]`` when resumed mid-epoch) -> mean loss/accuracy per head.
        The step trace stays on the device and is copied to the host once, at the epoch's end."""
        self.ddp.train()
        self.splits.train.set_epoch(epoch)
        part = resumed or {"batches": 0, "sums": {}, "count": 0, "trace": {}}
        sums, count = (part["sums"], part["count"]) if is_main() else ({k: 0 * v for k, v in part["sums"].items()}, 0)
        trace = {k: v.tolist() if not v.is_floating_point() else list(v.unbind()) for k, v in part["trace"].items()}
        self.loaders["train"].batch_sampler.skip = part["batches"]
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d} if self.channels_last else {}
        for i, batch in enumerate(tqdm(self.loaders["train"], desc=f"epoch {epoch + 1}/{self.optim_cfg.epochs}",
                                       initial=part["batches"], leave=False, disable=not self.progress), part["batches"]):
            batch = {k: v.to(self.device, non_blocking=True, memory_format=fmt.get(v.dim(), torch.preserve_format))
                     for k, v in batch.items()}
            step = self.run_state["step"]
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
            self.run_state["step"] = step + 1
            if self.checkpoint_every and (step + 1) % self.checkpoint_every == 0:
                total = global_sum(torch.tensor(float(count)))        # every rank's part of the epoch so far
                self._save(batches=i + 1, sums={k: global_sum(v) for k, v in sums.items()}, count=int(total),
                           trace={k: torch.stack(v) if torch.is_tensor(v[0]) else torch.tensor(v) for k, v in trace.items()})
        columns = [k for k, v in trace.items() if v and torch.is_tensor(v[0])]
        host = torch.cat([torch.stack(trace[k]).to(self.device) for k in columns]).cpu() if columns else torch.zeros(0)
        for k, values in zip(columns, host.split([len(trace[k]) for k in columns])):
            trace[k] = values.tolist()                                   # one device -> host copy per epoch
        for k, v in trace.items():
            self.run_state["trace"].setdefault(k, []).extend(v)
        total = global_sum(torch.tensor(float(count)))
        stats = {k: (global_sum(v) / total.to(v.device)).item() for k, v in sums.items()}
        if not all(map(math.isfinite, stats.values())):
            raise Diverged(f"training diverged: the loss is not finite in epoch {epoch + 1}; try a lower lr or a grad_clip")
        return stats

    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train; with ``resume`` (and a checkpoint file) continue from it, so the result equals an uninterrupted run's."""
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        torch.manual_seed(self.seed)
        self.run_state = {"epoch": 0, "step": 0, "history": [], "trace": {}, "seconds": 0.0, "balancer_epoch": {},
                          "best": {"epoch": -1, "score": -1.0, "state": None}}
        resumed = self._restore() if resume and self.checkpoint and os.path.exists(self.checkpoint) else None
        self._start = time.perf_counter() - self.run_state["seconds"]
        history, state = self.run_state["history"], self.run_state
        for epoch in tqdm(range(state["epoch"], self.optim_cfg.epochs), desc="training", disable=not self.progress):
            if resumed is None:                     # a run resumed mid-epoch already started this epoch
                ctx = EpochContext(epoch=epoch, model=self.model, train_loader=self.loaders["train"],
                                   device=self.device, history=history, holdout_loader=self.loaders.get("holdout"))
                state["balancer_epoch"] = {k: float(v) for k, v in self.balancer.begin_epoch(ctx).items()}
            try:
                train_stats = self._train_epoch(epoch, resumed)
            except Diverged as err:
                err.history = history               # the epochs before the divergence, for the record
                raise
            resumed = None
            record = {"epoch": epoch, "train": train_stats, "balancer": state["balancer_epoch"],
                      **{split: evaluate(self.model, self.loaders[split], self.device, forward=self.trained.forward,
                                         num_classes=self.model.num_classes, amp=self.amp)
                         for split in ("val", "test")},
                      "seconds": time.perf_counter() - self._start}
            history.append(record)
            score, best = record["val"][self.select_head]["accuracy"], state["best"]
            if score > best["score"]:
                best = state["best"] = {"epoch": epoch, "score": score, "state": copy.deepcopy(
                    {k: v.detach().cpu() for k, v in self.model.state_dict().items()})}
            stop = self.optim_cfg.early_stop and epoch - best["epoch"] >= self.optim_cfg.early_stop
            state["epoch"] = self.optim_cfg.epochs if stop else epoch + 1      # a resumed stopped run stays stopped
            self._save()
            if stop:
                break                               # early_stop epochs in a row without a better val score
        best = state["best"]
        self.model.load_state_dict(best["state"])
        chosen = history[best["epoch"]]
        return TrainResult(history=history, trace=state["trace"], best_epoch=best["epoch"],
                           val=chosen["val"], test=chosen["test"], seconds=time.perf_counter() - self._start)

    def _save(self, **part) -> None:
        """Checkpoint (rank 0; a temporary file, then a rename): model, optimizer (its groups' lr scales too), balancer
        state, every RNG (python, numpy, torch, CUDA, the loader's), progress so far and the ``part`` of an epoch."""
        if not (self.checkpoint and is_main()):
            return
        kind, keys, *rest = np.random.get_state()
        rng = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), *rest),
               "torch": torch.get_rng_state(), "loader": self.loaders["train"].generator.get_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        state = dict(self.run_state, trace={k: torch.tensor(v) for k, v in self.run_state["trace"].items()},
                     seconds=time.perf_counter() - self._start)
        os.makedirs(os.path.dirname(os.path.abspath(self.checkpoint)), exist_ok=True)
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng,
                    "balancer": self.balancer.state_dict(), "run": state, "partial": part or None},
                   tmp := f"{self.checkpoint}.tmp")
        os.replace(tmp, self.checkpoint)

    def _restore(self) -> dict | None:
        """Load the checkpoint into the model, optimizer, balancer, RNGs and ``run_state``; -> the partial epoch."""
        ckpt = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        on_device = partial(tree_map, lambda x: x.to(self.device) if torch.is_tensor(x) else x)
        self.model.load_state_dict(ckpt["model"])
        groups = self.optimizer.param_groups         # balancers hold these dicts: load the saved values into them
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for old, new in zip(groups, self.optimizer.param_groups):
            old.update(new)
        self.optimizer.param_groups = groups
        self.balancer.load_state_dict(on_device(ckpt["balancer"]))
        rng = ckpt["rng"]
        random.setstate(rng["python"])
        np.random.set_state((rng["numpy"][0], rng["numpy"][1].numpy().astype(np.uint32), *rng["numpy"][2:]))
        torch.set_rng_state(rng["torch"])
        self.loaders["train"].generator.set_state(rng["loader"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.run_state = dict(ckpt["run"], trace={k: v.tolist() for k, v in ckpt["run"]["trace"].items()})
        return on_device(ckpt["partial"])


def seeded_model(cfg: RunConfig, splits: DatasetSplits):
    """The model of ``cfg``, built right after ``torch.manual_seed(cfg.seed)``: a seed gives its weights."""
    torch.manual_seed(cfg.seed)
    return build_model(input_shapes=splits.input_shapes(), num_classes=splits.num_classes,
                       encoder=cfg.model.encoder, fusion=cfg.model.fusion,
                       encoder_options=cfg.model.encoder_options, fusion_options=cfg.model.fusion_options)


def build_trainer(cfg: RunConfig, splits: DatasetSplits, *, model=None, **options) -> Trainer:
    """The trainer of ``cfg`` on ``splits``: objective, balancer and (unless given) the seeded model; ``options``:
    ``checkpoint`` (file), ``checkpoint_every`` (steps, besides every epoch end)."""
    objective = OBJECTIVES.create(cfg.objective.name, **cfg.objective.options)
    balancer = BALANCERS.create(cfg.balancer.name, **cfg.balancer.options)
    return Trainer.from_config(cfg, model if model is not None else seeded_model(cfg, splits),
                               objective, balancer, splits, **options)
