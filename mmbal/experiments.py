"""One experiment = one config -> one trained model -> one result record (with provenance)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmbal import __version__
from mmbal.config import RunConfig
from mmbal.data import DATASETS
from mmbal.regimes import REGIMES
from mmbal.train import TrainResult, Trained, build_trainer, check_optim_config, resolve_device

RESULT_FORMAT = 1


@dataclass
class Run:
    """A finished run: its JSON record, the raw result and the trained model (with loaders, device)."""

    record: dict[str, Any]
    result: TrainResult
    trained: Trained


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


def run(cfg: RunConfig) -> Run:
    """Train one configuration (a model, or a regime of ``mmbal.regimes``) and build its record."""
    check_optim_config(cfg.optim)
    resolve_device(cfg.device)
    splits = DATASETS.create(cfg.data.name, seed=cfg.seed, root=cfg.data.root, **cfg.data.options)
    if cfg.regime is None:
        trainer = build_trainer(cfg, splits)
        result, trained = trainer.fit(), trainer.trained
    else:
        result, trained = REGIMES.create(cfg.regime, cfg=cfg, splits=splits, **cfg.regime_options)
    record = {"format": RESULT_FORMAT, "config": cfg.to_dict(), "environment": environment(trained.device),
              "data": {"sizes": splits.sizes(), "num_classes": splits.num_classes,
                       "modalities": list(splits.modalities)},
              "best_epoch": result.best_epoch, "seconds": result.seconds, "val": result.val,
              "test": result.test, "history": result.history, "trace": result.trace, **result.extra}
    return Run(record, result, trained)


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
