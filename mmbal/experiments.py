"""One experiment = one config -> one trained model -> one result JSON (with provenance)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from mmbal import __version__
from mmbal.balancers import build_balancer
from mmbal.config import RunConfig
from mmbal.data import build_dataset
from mmbal.models import build_model
from mmbal.objectives import OBJECTIVES
from mmbal.train import Trainer, TrainResult, check_optim_config, resolve_device

RESULT_FORMAT = 1


def git_commit() -> str | None:
    """The commit of the mmbal checkout, or None outside a git checkout."""
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (out.stdout.strip() + ("+dirty" if dirty else "")) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Hardware and software provenance recorded with every result."""
    info = {"mmbal": __version__, "commit": git_commit(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "device": str(device), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def prepare(cfg: RunConfig):
    """Validate the whole config and build data, model, objective and balancer (before training)."""
    check_optim_config(cfg.optim)
    device = resolve_device(cfg.device)
    objective = OBJECTIVES.create(cfg.objective.name, **cfg.objective.options)
    balancer = build_balancer(cfg.balancer.name, **cfg.balancer.options)
    splits = build_dataset(cfg.data.name, seed=cfg.seed, root=cfg.data.root, **cfg.data.options)
    torch.manual_seed(cfg.seed)
    model = build_model(input_shapes=splits.input_shapes(), num_classes=splits.num_classes,
                        encoder=cfg.model.encoder, fusion=cfg.model.fusion,
                        encoder_options=cfg.model.encoder_options,
                        fusion_options=cfg.model.fusion_options)
    return device, splits, model, objective, balancer


def run(cfg: RunConfig) -> tuple[dict[str, Any], Trainer, TrainResult]:
    """Train one configuration; returns the result record, the trainer and the raw result."""
    if cfg.regime is not None:              # unimodal / ensemble / uni-pre: see mmbal.regimes
        from mmbal.regimes import run_regime
        return run_regime(cfg)
    device, splits, model, objective, balancer = prepare(cfg)
    trainer = Trainer(model, objective, balancer, splits, optim=cfg.optim,
                      batch_size=cfg.data.batch_size, seed=cfg.seed, device=str(device),
                      amp=cfg.amp, select_head=cfg.select_head, num_workers=cfg.data.num_workers,
                      progress=cfg.progress)
    result = trainer.fit()
    record = {
        "format": RESULT_FORMAT,
        "config": cfg.to_dict(),
        "environment": environment(trainer.device),
        "data": {"sizes": splits.sizes(), "num_classes": splits.num_classes,
                 "modalities": list(splits.modalities)},
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "val": result.val,
        "test": result.test,
        "history": result.history,
        "trace": result.trace,
    }
    return record, trainer, result


def write_json(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomic write: a temporary file in the same folder, then rename (no partial JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)
