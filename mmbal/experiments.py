"""One experiment = one config -> one trained model -> one result record (with provenance)."""
from __future__ import annotations

import hashlib
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
from mmbal.balancers import BALANCERS
from mmbal.config import RunConfig
from mmbal.data import DATASETS
from mmbal.regimes import REGIMES
from mmbal.train import TrainResult, Trained, build_trainer, resolve_device

RESULT_FORMAT = 1
NOT_HASHED = ("device", "progress", "data.root", "data.num_workers", "amp", "channels_last", "compile")   # where a run ran, not what it computes


@dataclass
class Run:
    """A finished run: its JSON record, the raw result and the trained model (with loaders, device)."""
    record: dict[str, Any]
    result: TrainResult
    trained: Trained


def git_commit() -> str | None:
    """The commit of the mmbal checkout, or None outside a git checkout."""
    try:
        git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
        out, dirty = (subprocess.run([*git, *args], capture_output=True, text=True, timeout=5)
                      for args in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "--untracked-files=no"]))
        return (out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Hardware and software provenance recorded with every result."""
    return {"mmbal": __version__, "commit": git_commit(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "device": str(device),
            "cpu_threads": torch.get_num_threads(), **({"gpu": torch.cuda.get_device_name(device)}
            if device.type == "cuda" else {"cpu": platform.processor() or platform.machine()})}


def run(cfg: RunConfig, *, checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 0,
        resume: bool = False) -> Run:
    """Train one configuration (a model, or a regime of ``mmbal.regimes``) and build its record. A model run saves
    ``checkpoint`` at every epoch end (and every ``checkpoint_every`` steps); ``resume`` continues from it exactly.
    Regimes (several models in sequence) restart from scratch."""
    resolve_device(cfg.device)
    splits = DATASETS.create(cfg.data.name, seed=cfg.seed, root=cfg.data.root, **cfg.data.options)
    if cfg.regime is None:
        trainer = build_trainer(cfg, splits, checkpoint=checkpoint and str(checkpoint), checkpoint_every=checkpoint_every)
        result, trained = trainer.fit(resume=resume), trainer.trained
    else:
        result, trained = REGIMES.create(cfg.regime, cfg=cfg, splits=splits, **cfg.regime_options)
    record = {"format": RESULT_FORMAT, "config": cfg.to_dict(), "config_hash": config_hash(cfg),
              "environment": environment(trained.device),
              "data": {"sizes": splits.sizes(), "num_classes": splits.num_classes,
                       "modalities": list(splits.modalities)},
              "best_epoch": result.best_epoch, "seconds": result.seconds, "val": result.val,
              "test": result.test, "history": result.history, "trace": result.trace, **result.extra}
    return Run(record, result, trained)


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.01}} -> {"optim.lr": 0.01} (empty option dicts vanish)."""
    return {k: v for key, value in config.items() for k, v in
            (_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}).items()}


def flat_config(cfg: RunConfig | dict[str, Any]) -> dict[str, Any]:
    """The settings that decide a run's result, flat; a stored config goes through ``RunConfig`` first,
    so fields added later take their defaults (a record written before them still matches)."""
    raw = (cfg if isinstance(cfg, RunConfig) else RunConfig.from_dict(cfg)).to_dict()
    balancer = raw["balancer"]                     # balancer options added later take their defaults too
    balancer["options"] = {**(BALANCERS.defaults(balancer["name"]) if balancer["name"] in BALANCERS else {}),
                           **balancer["options"]}
    return {k: v for k, v in _flat(json.loads(json.dumps(raw))).items() if k not in NOT_HASHED}


def config_hash(cfg: RunConfig | dict[str, Any]) -> str:
    """sha256 of the flat config (keys sorted): equal hashes, equal runs (device and paths aside)."""
    return hashlib.sha256(json.dumps(flat_config(cfg), sort_keys=True).encode()).hexdigest()[:16]


def config_changes(old: RunConfig | dict[str, Any], new: RunConfig | dict[str, Any]) -> list[str]:
    """``["optim.epochs 1 -> 20", ...]``: the settings that differ between two configs."""
    a, b = flat_config(old), flat_config(new)
    return [f"{k} {a.get(k, '-')} -> {b.get(k, '-')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_writable(path: str | os.PathLike) -> Path:
    """Fail before any work when a file cannot be written there: one line naming the path and why."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    while not folder.exists():                  # the nearest existing folder (write_json makes the rest)
        folder = folder.parent
    if folder == path or not folder.is_dir():
        raise ValueError(f"cannot write {path}: " + (f"it is a folder; give a file path such as {path / 'run.json'}"
                                                      if path.is_dir() else f"{folder} is a file, not a folder"))
    try:
        os.close((probe := tempfile.mkstemp(prefix=".mmbal-write-check.", dir=folder))[0])
        os.unlink(probe[1])
    except OSError as err:
        raise ValueError(f"cannot write {path}: folder {folder} is not writable ({err.strerror})") from None
    return path


def write_json(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomic write (temporary file, then rename) of strict JSON (NaN, ±inf -> null), mode 0666 & ~umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(json.loads(json.dumps(record), parse_constant=lambda _: None), fh, indent=1, allow_nan=False)
        os.umask(umask := os.umask(0))                  # read the umask (mkstemp made the file 0600)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
