"""Sweeps: a preset's grid (methods x fusions x seeds/folds), one JSON per cell under
``<results>/[fast/]<table>/runs/<method>__<fusion>__seed<S>.json``. A finished cell (equal config hashes; JSONs are
written atomically) is skipped, so a killed sweep resumes; a record of another config (say ``--epochs 1``) is re-run.
``shard=(i, n)`` runs every n-th cell from i, so n machines or GPUs can split one table."""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mmbal.config import DataConfig, RunConfig
from mmbal.distributed import is_main, world_size
from mmbal.experiments import check_writable, config_changes, config_hash, git_commit, read_json, run, write_json
from mmbal.metrics import reliability_bins
from mmbal.presets import DATASET_SHAPES, Preset, get_preset
from mmbal.probe import probe_encoders
from mmbal.train import resolve_device

TRACE_POINTS = 250       # per-step trace columns are subsampled to at most this many points
TRACE_DIGITS = 5         # and rounded to this many significant digits (keeps each JSON small)


def with_speed(cfg: RunConfig, speed: dict[str, Any] | None) -> RunConfig:
    """``cfg`` with the GPU-path settings in ``speed`` (num_workers, amp, channels_last, compile; None: unchanged),
    none of which is part of the config hash: the run is still the table's cell."""
    speed = {k: v for k, v in (speed or {}).items() if v is not None}
    return replace(cfg, data=replace(cfg.data, num_workers=speed.pop("num_workers", cfg.data.num_workers)), **speed)


@dataclass(frozen=True)
class Cell:
    """One run of a table: a method at a fusion with one seed (and the fold that goes with it)."""
    table: str
    method: str
    fusion: str
    seed: int

    @property
    def filename(self) -> str:
        return f"{self.method}__{self.fusion}__seed{self.seed}.json"


def table_dir(results: str | Path, table: str, *, fast: bool = False) -> Path:
    """Folder of one table's results; FAST results live apart so they never mix with full ones."""
    return Path(results) / ("fast" if fast else "") / table


def result_path(results: str | Path, cell: Cell, *, fast: bool = False) -> Path:
    return table_dir(results, cell.table, fast=fast) / "runs" / cell.filename


def grid(preset: str | Preset, *, methods: Iterable[str] | None = None, fusions: Iterable[str] | None = None,
         seeds: Iterable[int] | None = None, fast: bool = False) -> list[Cell]:
    """Cells of a preset, optionally restricted; FAST keeps only the first seed unless seeds are given."""
    preset = get_preset(preset)
    for kind, chosen, valid in (("method", methods, preset.methods), ("fusion", fusions, preset.fusions)):
        if chosen is not None and (unknown := set(chosen) - set(valid)):
            raise ValueError(f"unknown {kind}s {sorted(unknown)}; valid: {', '.join(valid)}")
    seeds = list(seeds) if seeds is not None else list(preset.seeds[:1] if fast else preset.seeds)
    return [Cell(preset.name, m, f, s) for s in seeds for m, f in preset.cells()
            if (methods is None or m in methods) and (fusions is None or f in fusions)]


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n); None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/2), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def record_mismatch(record: Any, cfg: RunConfig) -> str | None:
    """None when ``record`` is a finished run of ``cfg`` (same config hash), else why it is not."""
    if not isinstance(record, dict) or "test" not in record:
        return "no test metrics" + (f" (diverged: {record['diverged']})" if "diverged" in record else "")
    try:
        if config_hash(record["config"]) == config_hash(cfg):
            return None
        return "config differs: " + ", ".join(config_changes(record["config"], cfg))
    except (KeyError, TypeError, ValueError) as err:
        return f"unreadable config ({err})"


def cell_status(path: str | Path, cfg: RunConfig) -> str | None:
    """None when ``path`` holds a finished run of ``cfg``, else why the cell must run."""
    try:
        record = read_json(path)
    except FileNotFoundError:
        return "not run"
    except (OSError, ValueError) as err:
        return f"unreadable ({err})"
    return record_mismatch(record, cfg)


# -- making a record small and self-describing -------------------------------------------------
def subsample_trace(trace: dict[str, list], points: int = TRACE_POINTS, digits: int = TRACE_DIGITS) -> dict[str, list]:
    """Keep <= ``points`` evenly spaced steps (first and last included) of every trace column."""
    n = max((len(v) for v in trace.values()), default=0)
    if n == 0:
        return {}
    idx = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int))    # (<= points,) step indices
    cols = {key: np.asarray(values, dtype=float)[idx] for key, values in trace.items() if len(values) == n}
    return {key: [int(v) for v in col] if key in ("step", "epoch") else [float(f"{v:.{digits}g}") for v in col]
            for key, col in cols.items()}


def run_cell(cell: Cell, path: str | Path, *, preset: str | Preset | None = None, fast: bool = False,
             epochs: int | None = None, device: str = "auto", data_root: str | None = None,
             speed: dict[str, Any] | None = None, checkpoint_every: int = 0) -> dict[str, Any]:
    """Train one cell, write its compact record (trace subsampled, cell, reliability bins) atomically, return it.
    The run checkpoints next to ``path`` (``<cell>.<config hash>.ckpt``) and resumes from a checkpoint of the same
    config there (a killed or preempted cell continues); the checkpoint is removed once the record is written."""
    preset = get_preset(preset or cell.table)
    cfg = with_speed(preset.run_config(cell.method, cell.fusion, cell.seed, fast=fast, epochs=epochs, device=device,
                                       data_root=data_root), speed)
    check_writable(path)
    path = Path(path)
    done = run(cfg, checkpoint=path.with_suffix(f".{config_hash(cfg)}.ckpt"), checkpoint_every=checkpoint_every,
               resume=True)
    steps = max((len(v) for v in done.record.get("trace", {}).values()), default=0)
    record = dict(done.record, trace=subsample_trace(done.record.get("trace", {})))
    record["trace_info"] = {"steps": steps, "points": len(record["trace"].get("step", [])),
                            "note": f"evenly subsampled to <= {TRACE_POINTS} points, {TRACE_DIGITS} significant digits"}
    record["cell"] = dict(vars(cell), fast=fast)
    logits, labels = done.trained.predict("test")
    record["reliability"] = {"test": {h: reliability_bins(v, labels) for h, v in logits.items()}}   # ECE's 15 bins
    if preset.linear_probe:
        record["linear_probe"] = probe_encoders(done.trained, preset.linear_probe)   # regimes: their own encoders
    if is_main():                                               # torchrun: rank 0 writes
        write_json(record, path)
        for checkpoint in path.parent.glob(f"{path.stem}.*.ckpt"):
            checkpoint.unlink()
    return record


def sweep(preset: str | Preset, results: str | Path, *, shard: tuple[int, int] = (0, 1), fast: bool = False,
          methods=None, fusions=None, seeds=None, epochs: int | None = None, device: str = "auto",
          data_root: str | None = None, runner: Callable[..., dict] | None = None, progress: bool = True,
          keep_going: bool = True, log: Callable[[str], None] = print, speed: dict[str, Any] | None = None,
          checkpoint_every: int = 0) -> dict[str, list[Cell]]:
    """Run every unfinished cell of this shard (settings, device, folder checked first) -> {"done", "skipped",
    "failed"} cell lists; a cell that raises is logged and left unwritten (``keep_going``; under torchrun it stops
    the sweep, as the other ranks cannot go on alone), one finished meanwhile by another shard sharing the folder
    is skipped; an unfinished cell resumes from its checkpoint. ``speed``: see ``with_speed``."""
    preset = get_preset(preset)
    if results is None:
        raise ValueError("sweep needs a results folder (the CLI's default: book/results), got None")
    i, n = shard
    cells = grid(preset, methods=methods, fusions=fusions, seeds=seeds, fast=fast)[i::n]
    configs = {c: preset.run_config(c.method, c.fusion, c.seed, fast=fast, epochs=epochs, device=device,
                                    data_root=data_root) for c in cells}
    status = {c: cell_status(result_path(results, c, fast=fast), configs[c]) for c in cells}
    todo = [c for c in cells if status[c] is not None]
    skipped = [c for c in cells if c not in todo]
    log(f"{preset.name}: {len(cells)} runs in shard {i}/{n}, {len(skipped)} finished, "
        f"{len(todo)} to run -> {table_dir(results, preset.name, fast=fast)}")
    for c in [c for c in todo if status[c] != "not run"]:
        log(f"  re-run {c.method}/{c.fusion}/seed{c.seed}: {status[c]}")
    if todo:
        resolve_device(device)
        check_writable(result_path(results, todo[0], fast=fast))
    done, failed, run_seconds, start, stopped = [], [], {}, time.perf_counter(), False
    bar = tqdm(todo, desc="sweep", disable=not progress, unit="run")

    def run_todo() -> None:
        for cell in bar:
            path = result_path(results, cell, fast=fast)
            if cell_status(path, configs[cell]) is None:                 # another shard wrote it meanwhile
                skipped.append(cell)
                continue
            bar.set_postfix_str(f"{cell.method}/{cell.fusion}/seed{cell.seed}")
            t0 = time.perf_counter()
            try:
                record = (runner or run_cell)(cell, path, preset=preset, fast=fast, epochs=epochs, device=device,
                                              data_root=data_root, speed=speed, checkpoint_every=checkpoint_every)
            except Exception as err:            # one broken cell must not stop the table; Ctrl-C still does
                if not keep_going or world_size() > 1:
                    raise
                failed.append(cell)
                log(f"  FAILED {cell.method}/{cell.fusion}/seed{cell.seed}: {type(err).__name__}: {err}")
                continue
            done.append(cell)
            seconds = run_seconds[path.stem] = time.perf_counter() - t0
            acc = record.get("test", {}).get("mm", {}).get("accuracy")
            log(f"  {cell.method:<18} {cell.fusion:<12} seed {cell.seed:<4} "
                f"test mm acc {acc if acc is None else f'{acc:.4f}'}  {seconds:6.1f} s")

    try:
        with sigterm_as_interrupt():
            run_todo()
    except KeyboardInterrupt:               # Ctrl-C or a job scheduler's SIGTERM: record what finished, then stop
        stopped = True
    wall = time.perf_counter() - start
    log(f"{len(done)} runs in {wall:.1f} s" + (f", {len(failed)} FAILED" if failed else "")
        + (", stopped before the end" if stopped else ""))
    if (done or stopped) and is_main():   # a stopped invocation spent time even if no run finished (checkpoints keep it)
        log_timing(results, preset.name, fast=fast, shard=shard, wall=wall, seconds=run_seconds, stopped=stopped)
    if stopped:
        raise KeyboardInterrupt("sweep stopped")
    return {"done": done, "skipped": skipped, "failed": failed}


@contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM (a job scheduler's stop, ``kill``) raises KeyboardInterrupt as Ctrl-C does, so a
    stopped sweep still records what it finished. Only the main thread can set signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def log_timing(results: str | Path, table: str, *, fast: bool, shard: tuple[int, int], wall: float,
               seconds: dict[str, float], stopped: bool = False) -> Path:
    """Append this shard's own timing to ``<table>/sweep_timing.jsonl``: its wall time, every run's seconds, the
    commit, the machine and the torch threads (one JSON line per sweep invocation that ran something or was stopped;
    ``stopped``: the invocation was interrupted, and a later one continues the table)."""
    path = table_dir(results, table, fast=fast) / "sweep_timing.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "shard": f"{shard[0]}/{shard[1]}", "commit": git_commit(), "machine": platform.machine(),
             "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "runs": len(seconds),
             "wall_seconds": round(wall, 1), "stopped": stopped,
             "run_seconds": {k: round(v, 1) for k, v in seconds.items()}}
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
    return path


def read_timing(results: str | Path, table: str, *, fast: bool = False) -> pd.DataFrame:
    """Every sweep invocation logged in ``<table>/sweep_timing.jsonl``, one row each, in the order they finished
    (columns as ``log_timing`` writes them; ``run_seconds`` maps each run's file stem to its seconds)."""
    path = table_dir(results, table, fast=fast) / "sweep_timing.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sweep of {table!r} has logged its timing there")
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def table_wall_seconds(timing: pd.DataFrame) -> float:
    """A table's wall time from its timing log: shards run side by side, so the longest shard's summed wall time
    over its invocations (stopped ones included)."""
    return float(timing.groupby("shard")["wall_seconds"].sum().max())


def papermill_runner(template: str | Path) -> Callable[..., dict]:
    """A runner that executes the template notebook per cell and keeps it next to the JSON."""
    def runner(cell: Cell, path: str | Path, *, preset=None, fast=False, epochs=None, device="auto",
               data_root=None, **_speed) -> dict:      # the template trains with the preset's own settings
        import papermill          # optional dependency of the book
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        params = {"preset": cell.table, "method": cell.method, "fusion": cell.fusion, "seed": cell.seed,
                  "fast": fast, "out": str(path.resolve()), "epochs": epochs, "device": device,
                  "data_root": data_root}
        papermill.execute_notebook(str(template), str(path.with_suffix(".ipynb")), parameters=params,
                                   progress_bar=False, cwd=str(Path(template).resolve().parent))
        return read_json(path)
    return runner


def shapes_key(preset: Preset) -> str:
    """The ``dataset_shapes`` entry of a preset: its dataset, or ``dataset/inputs`` for pre-extracted features."""
    inputs = preset.data_options.get("inputs", "media")
    return preset.dataset if inputs == "media" else f"{preset.dataset}/{inputs}"


def estimate(preset: str | Preset, *, steps: int = 3, batch: int | None = None, methods=None, fusions=None,
             device: str = "auto") -> pd.DataFrame:
    """Per cell: one epoch of ``steps`` steps of its configuration, timed on random tensors of the table's shapes
    (presets.yaml ``dataset_shapes``; at ``batch`` samples, scaled linearly to the preset's batch; validation and
    test in their share of the data), -> seconds per epoch and the device-hours of all its seeds, from the
    early-stopping bound (early_stop + 1 epochs) to the preset's epochs. Regimes time every model they train."""
    preset = get_preset(preset)
    data = DATASET_SHAPES[shapes_key(preset)]
    train, val, test = data["sizes"]
    full, small = preset.batch_size, batch or preset.batch_size
    rows = []
    for cell in tqdm(grid(preset, methods=methods, fusions=fusions, seeds=preset.seeds[:1]), desc="estimate"):
        optim = preset.run_config(cell.method, cell.fusion, cell.seed).optim             # the epoch bounds
        cfg = preset.run_config(cell.method, cell.fusion, cell.seed, epochs=1, device=device)
        sizes = [steps * small, *(max(1, round(steps * small * n / train)) for n in (val, test))]
        cfg.data = DataConfig("random_tensors", batch_size=small, options={
            "shapes": data["shapes"], "sizes": sizes, "num_classes": data["num_classes"]})
        seconds = run(cfg).record["seconds"] * full / small               # `steps` steps at the preset's batch
        epoch = seconds / steps * math.ceil(train / full)
        least = min(optim.early_stop + 1, optim.epochs) if optim.early_stop else optim.epochs
        rows.append({"method": cell.method, "fusion": cell.fusion, "s/step": seconds / steps,
                     "steps/epoch": math.ceil(train / full), "s/epoch": epoch, "epochs": f"{least}-{optim.epochs}",
                     "runs": len(preset.seeds), "hours_min": epoch * least * len(preset.seeds) / 3600,
                     "hours_max": epoch * optim.epochs * len(preset.seeds) / 3600})
    return pd.DataFrame(rows)
