"""Experiment commands: ``run`` (one table cell), ``sweep`` (a whole table), ``table`` (aggregate to CSV),
``compare`` (a re-run against the committed runs).

    python -m mmbal run --preset digits_av --method mlb --fusion concat --seed 109
    python -m mmbal sweep --table digits_av [--shard 0/2] [--results book/results] [--fast]
    python -m mmbal table digits_av [--results book/results] [--out summary.csv]
    python -m mmbal compare digits_av --rerun /tmp/rerun [--out rerun_check.json]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_RESULTS = "book/results"
TEMPLATE = Path(__file__).resolve().parent.parent / "book" / "experiments" / "run_template.ipynb"


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t for t in text.split(",") if t]


def set_threads(threads: int | None, device: str) -> None:
    """CPU runs default to 1 torch thread: with shared cores, more threads are much slower."""
    import torch

    if threads is None and (device == "cpu" or (device == "auto" and not torch.cuda.is_available())):
        threads = 1
    if threads:
        torch.set_num_threads(threads)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results folder (default: %(default)s)")
    p.add_argument("--fast", action="store_true", help="FAST smoke run: 2 epochs, first seed, under <results>/fast/")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (recorded)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None, help="cache folder written by data_scripts/")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 on CPU)")


def add_experiment_parsers(sub) -> None:
    """Register ``run``, ``sweep`` and ``table`` on the main parser's subparsers."""
    from mmbal.presets import PRESETS

    names = ", ".join(PRESETS)
    p = sub.add_parser("run", help="train one cell of a preset table and write its result JSON")
    p.add_argument("--preset", required=True, help=f"one of: {names}")
    p.add_argument("--method", required=True)
    p.add_argument("--fusion", default=None, help="default: the preset's main fusion")
    p.add_argument("--seed", type=int, default=None, help="default: the preset's first seed")
    p.add_argument("--out", default=None, help="result JSON (default: the sweep's path under --results)")
    _common(p)
    p = sub.add_parser("sweep", help="run a preset's grid (methods x fusions x seeds), skipping finished runs")
    p.add_argument("--table", required=True, help=f"one of: {names}")
    p.add_argument("--shard", default=None, metavar="I/N", help="run cells I, I+N, I+2N, ... (0 <= I < N)")
    p.add_argument("--methods", default=None, help="comma-separated subset of rows")
    p.add_argument("--fusions", default=None, help="comma-separated subset of columns")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    p.add_argument("--papermill", action="store_true",
                   help="run each cell through book/experiments/run_template.ipynb, keeping the notebook")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their status, run nothing")
    p.add_argument("--no-progress", action="store_true")
    _common(p)
    p = sub.add_parser("table", help="aggregate a table's result JSONs into mean ± std (CSV)")
    p.add_argument("name", help=f"one of: {names}")
    p.add_argument("--results", default=DEFAULT_RESULTS)
    p.add_argument("--out", default=None, help="CSV path (default: <results>/<table>/summary.csv)")
    p.add_argument("--fast", action="store_true", help="aggregate the FAST results")

    p = sub.add_parser("compare", help="compare a re-run of some cells with the committed runs of a table")
    p.add_argument("name", help=f"one of: {names}")
    p.add_argument("--rerun", required=True, help="results folder of the re-run (e.g. written by sweep --results)")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="reference results (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the comparison as JSON, with the re-run's provenance")


def cmd_run(args) -> int:
    from mmbal.presets import get_preset
    from mmbal.sweep import Cell, result_path, run_cell

    preset = get_preset(args.preset)
    cell = Cell(preset.name, args.method, args.fusion or preset.fusion,
                preset.seeds[0] if args.seed is None else args.seed)
    preset.method(cell.method, cell.fusion)                     # validate before any work
    out = args.out or result_path(args.results, cell, fast=args.fast)
    set_threads(args.threads, args.device)
    record = run_cell(cell, out, preset=preset, fast=args.fast, epochs=args.epochs, device=args.device,
                      data_root=args.data_root)
    test = record["test"]
    print(" ".join(f"{h}: {v['accuracy']:.4f}" for h, v in test.items()), f"({record['seconds']:.1f} s)")
    print(f"wrote {out}")
    return 0


def cmd_sweep(args) -> int:
    from mmbal.presets import get_preset
    from mmbal.sweep import grid, is_finished, papermill_runner, parse_shard, result_path, sweep

    preset = get_preset(args.table)
    shard = parse_shard(args.shard)
    seeds = None if args.seeds is None else [int(s) for s in _csv(args.seeds)]
    kwargs = dict(methods=_csv(args.methods), fusions=_csv(args.fusions), seeds=seeds, fast=args.fast)
    if args.dry_run:
        for cell in grid(preset, **kwargs)[shard[0]::shard[1]]:
            path = result_path(args.results, cell, fast=args.fast)
            print(f"{'done' if is_finished(path) else 'todo'}  {path}")
        return 0
    set_threads(args.threads, args.device)
    if args.papermill and not TEMPLATE.exists():
        raise FileNotFoundError(f"papermill template {TEMPLATE} not found (run from a source checkout)")
    out = sweep(preset, args.results, shard=shard, epochs=args.epochs, device=args.device, data_root=args.data_root,
          runner=papermill_runner(TEMPLATE) if args.papermill else None,
          progress=not args.no_progress and "CI" not in os.environ, **kwargs)
    print(f"next: python -m mmbal table {preset.name} --results {args.results}" + (" --fast" if args.fast else ""))
    return 1 if out["failed"] else 0


def cmd_table(args) -> int:
    import pandas as pd

    from mmbal.tables import paper_table, write_summary

    path, summary = write_summary(args.name, args.results, args.out, fast=args.fast)
    if path is None:
        print(f"no results for {args.name} under {args.results}" + (" (fast)" if args.fast else ""))
        return 1
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(paper_table(summary, args.name).to_string())
    print(f"wrote {path} ({len(summary)} rows, std = population std over seeds)")
    return 0


def cmd_compare(args) -> int:
    """Exit 0 when every re-run cell is within its reference cell's seed std, 1 otherwise (2: nothing to compare)."""
    import pandas as pd

    from mmbal.experiments import write_json
    from mmbal.tables import compare_runs, load_runs

    reference, rerun = load_runs(args.results, args.name), load_runs(args.rerun, args.name)
    if reference.empty or rerun.empty:
        print(f"nothing to compare: {len(reference)} reference runs under {args.results}, "
              f"{len(rerun)} re-runs under {args.rerun} for {args.name}", file=sys.stderr)
        return 2
    diff = compare_runs(reference, rerun)
    if diff.empty:
        print(f"no cell of {args.name} is in both {args.results} and {args.rerun}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(diff.round(4).to_string(index=False))
    n, same, within = len(diff), int(diff["identical"].sum()), int(diff["within_seed_std"].sum())
    print(f"{n} cells re-run: {same} identical, {within} within the reference cell's seed std")
    if args.out:
        runs = rerun.merge(diff[["method", "fusion", "seed"]], on=["method", "fusion", "seed"])
        write_json({"table": args.name, "cells": n, "identical": same, "within_seed_std": within,
                    "rerun_hardware": sorted(set(runs["hardware"])),
                    "rerun_commit": sorted(set(map(str, runs["commit"]))),
                    "rows": diff.to_dict(orient="records")}, args.out)
        print(f"wrote {args.out}")
    return 0 if within == n else 1


EXPERIMENT_COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "table": cmd_table, "compare": cmd_compare}
