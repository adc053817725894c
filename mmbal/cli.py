"""Command line: ``list``, ``train`` (one configuration) and ``table ACTION NAME`` (a preset's table):
``show`` (rows, seeds, hyperparameters with sources), ``run`` (one cell), ``sweep`` (every unfinished
cell, ``--shard i/n``), ``summary`` (mean ± std -> summary.csv; ``--merge`` folders of other shards), ``compare``
(a re-run against the committed runs), ``estimate`` (device-hours from a few timed steps). ``torchrun
--nproc_per_node N -m mmbal train|table run|table sweep ...`` trains each model data-parallel. Older spellings still work: ``run --preset N``, ``sweep --table N``, ``table N``,
``compare N``. Results live under ``--results`` (default ``book/results``, relative to the working
directory)."""
from __future__ import annotations

import argparse
import json
import os
import sys

import pandas as pd

from mmbal.balancers import BALANCERS
from mmbal.config import BalancerConfig, DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, RunConfig
from mmbal.data import DATASETS
from mmbal.distributed import init_from_env, is_main, world_size
from mmbal.experiments import check_writable, config_hash, run, write_json
from mmbal.models import ENCODERS, FUSIONS
from mmbal.objectives import OBJECTIVES
from mmbal.presets import PRESETS, get_preset
from mmbal.regimes import REGIMES
from mmbal.registry import UnknownNameError
from mmbal.sweep import (Cell, cell_status, estimate, grid, papermill_runner, parse_shard, result_path, run_cell,
                         sweep)
from mmbal.tables import compare_runs, load_runs, paper_table, write_summary
from mmbal.train import Diverged, resolve_device, set_threads

TABLE_ACTIONS = ("run", "sweep", "summary", "show", "compare", "estimate")


def _key_value(text: str) -> tuple[str, object]:
    """Parse ``key=value``; the value is JSON when it parses (numbers, true, null), else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t for t in text.split(",") if t]


def cmd_list(args) -> int:
    for registry in (DATASETS, ENCODERS, FUSIONS, OBJECTIVES, BALANCERS, REGIMES):
        print(f"{registry.kind}s:")
        for name, doc in registry.describe().items():
            print(f"  {name:<20} {doc}")
    return 0


KEY_VALUE = dict(type=_key_value, action="append", default=[], metavar="KEY=VALUE")
TRAIN_FLAGS = {   # flag -> argparse keywords (dataset, model, method, optimisation)
    "--dataset": dict(default="digits_av"),
    "--data-root": dict(default=None, help="cache folder written by data_scripts/"),
    "--data-opt": dict(KEY_VALUE, help="dataset option, e.g. image_noise=1.0 (repeatable)"),
    "--batch-size": dict(type=int, default=32),
    "--num-workers": dict(type=int, default=None, help="loader workers (default: 0 on CPU, up to 8 per GPU on CUDA)"),
    "--encoder": dict(default="small_cnn"),
    "--fusion": dict(default="concat"),
    "--encoder-opt": KEY_VALUE,
    "--fusion-opt": KEY_VALUE,
    "--objective": dict(default=None, help="joint | multi_loss (default: the balancer's own)"),
    "--balancer": dict(default="none"),
    "--alpha": dict(type=float, default=None),
    "--beta-max": dict(type=float, default=None),
    "--acts-on": dict(choices=("gradient", "update"), default=None,
                      help="scale the gradient (paper) or the update (learning rate) of a modality"),
    "--balancer-opt": KEY_VALUE,
    "--regime": dict(default=None, help="unimodal | ensemble | uni_pre_frozen | uni_pre_finetuned"),
    "--regime-opt": dict(KEY_VALUE, help="regime option, e.g. modality=audio (repeatable)"),
    "--optimizer": dict(default="sgd", help="sgd | adam | adamw"),
    "--lr": dict(type=float, default=0.01),
    "--momentum": dict(type=float, default=0.9),
    "--weight-decay": dict(type=float, default=1e-4),
    "--schedule": dict(default="cosine", help="cosine | constant"),
    "--epochs": dict(type=int, default=20),
    "--early-stop": dict(type=int, default=None),
    "--seed": dict(type=int, default=0),
    "--device": dict(default="auto"),
    "--amp": dict(action="store_true", help="bfloat16 autocast on CUDA"),
    "--channels-last": dict(action="store_true", help="NHWC convolutions on CUDA"),
    "--compile": dict(action="store_true", help="torch.compile the model"),
    "--checkpoint-every": dict(type=int, default=0, metavar="STEPS", help="checkpoint every STEPS steps too "
                               "(always at each epoch end)"),
    "--no-progress": dict(action="store_true"),
}
SPEED_FLAGS = ("--num-workers", "--amp", "--channels-last", "--compile", "--checkpoint-every")


def workers(args) -> int:
    """--num-workers, else 0 on CPU and min(8, cores per rank) on CUDA (the GPU must not wait for decoding)."""
    if args.num_workers is not None:
        return args.num_workers
    return min(8, (os.cpu_count() or 1) // world_size()) if resolve_device(args.device).type == "cuda" else 0


def speed(args) -> dict:
    return {"num_workers": workers(args), "amp": args.amp, "channels_last": args.channels_last, "compile": args.compile}


def config_from_args(args) -> RunConfig:
    flags = {"alpha": args.alpha, "beta_max": args.beta_max, "acts_on": args.acts_on}
    balancer_options = dict(args.balancer_opt) | {key: value for key, value in flags.items() if value is not None}
    objective = args.objective or BALANCERS.create(args.balancer, **balancer_options).objective
    return RunConfig(
        data=DataConfig(name=args.dataset, root=args.data_root, options=dict(args.data_opt),
                        batch_size=args.batch_size, num_workers=workers(args)),
        model=ModelConfig(encoder=args.encoder, fusion=args.fusion,
                          encoder_options=dict(args.encoder_opt), fusion_options=dict(args.fusion_opt)),
        objective=ObjectiveConfig(name=objective),
        balancer=BalancerConfig(name=args.balancer, options=balancer_options),
        optim=OptimConfig(name=args.optimizer, lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay, schedule=args.schedule, epochs=args.epochs,
                          early_stop=args.early_stop),
        seed=args.seed, device=args.device, amp=args.amp, progress=not args.no_progress,
        channels_last=args.channels_last, compile=args.compile,
        regime=args.regime, regime_options=dict(args.regime_opt))


def cmd_train(args) -> int:
    cfg = config_from_args(args)
    set_threads(None, args.device)
    checkpoint = args.checkpoint or (f"{args.out}.ckpt" if args.out else None)
    if args.out:
        check_writable(args.out)
    if args.resume and not checkpoint:
        raise ValueError("--resume needs --checkpoint PATH or --out PATH (its checkpoint is PATH.ckpt)")
    try:
        record = run(cfg, checkpoint=checkpoint, checkpoint_every=args.checkpoint_every, resume=args.resume).record
    except Diverged as err:                   # the record says so (strict JSON), then exit 1
        if args.out:
            write_json({"config": cfg.to_dict(), "config_hash": config_hash(cfg), "diverged": str(err),
                        "history": err.history}, args.out)
        raise
    print(f"best epoch {record['best_epoch'] + 1} (val {record['val']['mm']['accuracy']:.4f}), {record['seconds']:.1f} s")
    print(pd.DataFrame(record["test"]).T[["accuracy", "macro_f1", "ece"]].rename_axis("test head").round(4))
    if args.out and is_main():                # torchrun: rank 0 writes; the record replaces the checkpoint
        print(f"wrote {write_json(record, args.out)}")
        if os.path.exists(checkpoint):
            os.unlink(checkpoint)
    return 0


def cmd_show(args) -> int:
    preset = get_preset(args.name)
    print(f"{preset.name}: {preset.title}")
    print(f"  dataset {preset.dataset}, encoder {preset.encoder}, seeds {list(preset.seeds)}"
          + (f", folds {list(preset.folds)}" if preset.folds else "") + f", {len(grid(preset))} runs")
    with pd.option_context("display.width", 200, "display.max_colwidth", 80, "display.max_rows", 500):
        print(preset.hyperparameters().to_string(index=False))
    for note in preset.notes:
        print(f"  note: {note}")
    return 0


def cmd_run(args) -> int:
    preset = get_preset(args.name)
    cell = Cell(preset.name, args.method, args.fusion or preset.fusion, preset.seeds[0] if args.seed is None else args.seed)
    preset.method(cell.method, cell.fusion)                     # validate before any work
    out = args.out or result_path(args.results, cell, fast=args.fast)
    set_threads(args.threads, args.device)
    record = run_cell(cell, out, preset=preset, fast=args.fast, epochs=args.epochs, device=args.device,
                      data_root=args.data_root, speed=speed(args), checkpoint_every=args.checkpoint_every)
    print(" ".join(f"{h}: {v['accuracy']:.4f}" for h, v in record["test"].items()), f"({record['seconds']:.1f} s)")
    print(f"wrote {out}")
    return 0


def cmd_sweep(args) -> int:
    preset = get_preset(args.name)
    shard = parse_shard(args.shard)
    seeds = None if args.seeds is None else [int(s) for s in _csv(args.seeds)]
    kwargs = dict(methods=_csv(args.methods), fusions=_csv(args.fusions), seeds=seeds, fast=args.fast)
    if args.dry_run:
        for cell in grid(preset, **kwargs)[shard[0]::shard[1]]:
            path = result_path(args.results, cell, fast=args.fast)
            why = cell_status(path, preset.run_config(cell.method, cell.fusion, cell.seed, fast=args.fast,
                                                      epochs=args.epochs))
            print(f"done  {path}" if why is None else f"todo  {path}" + ("" if why == "not run" else f"  ({why})"))
        return 0
    if args.papermill and not os.path.isfile(args.papermill):
        raise FileNotFoundError(f"papermill template {args.papermill} not found (give --papermill PATH)")
    set_threads(args.threads, args.device)
    try:
        out = sweep(preset, args.results, shard=shard, epochs=args.epochs, device=args.device,
                    data_root=args.data_root, runner=papermill_runner(args.papermill) if args.papermill else None,
                    progress=not args.no_progress and "CI" not in os.environ, speed=speed(args),
                    checkpoint_every=args.checkpoint_every, **kwargs)
    except KeyboardInterrupt:                 # Ctrl-C / SIGTERM: the sweep has logged what it finished
        print("sweep stopped: finished runs are kept; the same command resumes the rest", file=sys.stderr)
        return 130
    print(f"next: python -m mmbal table summary {preset.name} --results {args.results}" + (" --fast" if args.fast else ""))
    return 1 if out["failed"] else 0


def load_and_warn(results: str, name: str, *, fast: bool = False) -> pd.DataFrame:
    """A table's runs; every unreadable result file is named on stderr (and left out)."""
    runs = load_runs(results, name, fast=fast)
    for line in runs.attrs.get("unreadable", []):
        print(f"warning: unreadable result file {line}", file=sys.stderr)
    return runs


def cmd_summary(args) -> int:
    get_preset(args.name)
    runs = pd.concat([load_and_warn(folder, args.name, fast=args.fast) for folder in [args.results, *args.merge]])
    if not runs.empty:
        runs = runs.drop_duplicates(["method", "fusion", "seed"]).reset_index(drop=True)   # a cell twice: the first
    path, summary = write_summary(args.name, args.results, args.out, fast=args.fast, runs=runs)
    if path is None:
        print(f"no results for {args.name} under {args.results}" + (" (fast)" if args.fast else ""))
        return 1
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(paper_table(summary, args.name).to_string())
    epochs = ", ".join(sorted(map(str, set(runs["epochs"].dropna().astype(int)))))
    print(f"{len(runs)} {'FAST' if args.fast else 'full'} runs, epochs {epochs or '?'}")
    for row in runs[runs.get("config_differs", pd.Series("", index=runs.index)).fillna("") != ""].itertuples():
        print(f"  not the preset's configuration: {row.path}: {row.config_differs}")
    print(f"wrote {path} ({len(summary)} rows, std = population std over seeds)")
    return 0


def cmd_compare(args) -> int:
    """Exit 0 when every re-run cell is within its reference cell's seed std, 1 otherwise (2: nothing to compare)."""
    if args.out:
        check_writable(args.out)
    reference, rerun = load_and_warn(args.results, args.name), load_and_warn(args.rerun, args.name)
    diff = compare_runs(reference, rerun) if not (reference.empty or rerun.empty) else pd.DataFrame()
    if diff.empty:
        print(f"nothing to compare: {len(reference)} reference runs under {args.results}, {len(rerun)} "
              f"re-runs under {args.rerun} for {args.name}, no cell in both", file=sys.stderr)
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


def cmd_estimate(args) -> int:
    """Time a few steps per cell on this device and print each cell's and the table's device-hours."""
    set_threads(args.threads, args.device)
    est = estimate(args.name, steps=args.steps, batch=args.batch, methods=_csv(args.methods), fusions=_csv(args.fusions),
                   device=args.device)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(est.round({"s/step": 3, "s/epoch": 1, "hours_min": 2, "hours_max": 2}).to_string(index=False))
    print(f"total: {est['hours_min'].sum():.1f} to {est['hours_max'].sum():.1f} {resolve_device(args.device)}-hours "
          f"for {est['runs'].sum()} runs (early stopping at the soonest to every epoch)")
    return 0


def add_table_parsers(sub, names: str) -> None:
    """``table ACTION NAME`` sub-commands (each also reachable by its older spelling)."""
    p = sub.add_parser("show", help="a preset's rows, seeds and hyperparameters with their sources")
    p.add_argument("name", help=f"one of: {names}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("name", help=f"one of: {names}")
    common.add_argument("--results", default="book/results", help="results folder (default: %(default)s)")
    train = argparse.ArgumentParser(add_help=False)
    train.add_argument("--fast", action="store_true", help="FAST smoke run: 2 epochs, first seed, under <results>/fast/")
    train.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (recorded)")
    for flag in ("--device", "--data-root", *SPEED_FLAGS):
        train.add_argument(flag, **TRAIN_FLAGS[flag])
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 on CPU)")
    p = sub.add_parser("run", parents=[common, train], help="train one cell and write its result JSON")
    p.add_argument("--method", required=True)
    p.add_argument("--fusion", default=None, help="default: the preset's main fusion")
    p.add_argument("--seed", type=int, default=None, help="default: the preset's first seed")
    p.add_argument("--out", default=None, help="result JSON (default: the sweep's path under --results)")
    p = sub.add_parser("sweep", parents=[common, train], help="run every unfinished cell (methods x fusions x seeds)")
    p.add_argument("--shard", default=None, metavar="I/N", help="run cells I, I+N, I+2N, ... (0 <= I < N)")
    p.add_argument("--methods", default=None, help="comma-separated subset of rows")
    p.add_argument("--fusions", default=None, help="comma-separated subset of columns")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    p.add_argument("--papermill", nargs="?", const="book/experiments/run_template.ipynb", default=None, metavar="TEMPLATE",
                   help="run each cell through a papermill template, keeping the notebook (default: %(const)s)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their status, run nothing")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("summary", parents=[common], help="aggregate the result JSONs into mean ± std (CSV)")
    p.add_argument("--out", default=None, help="CSV path (default: <results>/<table>/summary.csv)")
    p.add_argument("--fast", action="store_true", help="aggregate the FAST results")
    p.add_argument("--merge", action="append", default=[], metavar="FOLDER",
                   help="also read the runs under FOLDER (repeatable: e.g. each job-array shard's --results)")
    p = sub.add_parser("estimate", parents=[common], help="device-hours of a table from a few timed steps per cell")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per cell (default: %(default)s)")
    p.add_argument("--batch", type=int, default=None, help="time at this batch, scaled to the preset's (small on CPU)")
    p.add_argument("--methods", default=None, help="comma-separated subset of rows")
    p.add_argument("--fusions", default=None, help="comma-separated subset of columns")
    p.add_argument("--device", **TRAIN_FLAGS["--device"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 on CPU)")
    p = sub.add_parser("compare", parents=[common], help="compare a re-run of some cells with the committed runs")
    p.add_argument("--rerun", required=True, help="results folder of the re-run (e.g. written by sweep --results)")
    p.add_argument("--out", default=None, help="also write the comparison as JSON, with the re-run's provenance")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmbal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered datasets, encoders, fusions, objectives, balancers, regimes")
    p = sub.add_parser("train", help="train one model and write a result JSON")
    for flag, keywords in TRAIN_FLAGS.items():
        p.add_argument(flag, **keywords)
    p.add_argument("--out", default=None, help="result JSON path")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: OUT.ckpt; removed once OUT is written)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint (the same record as one run)")
    p = sub.add_parser("table", help=f"a preset's results table: {' | '.join(TABLE_ACTIONS)} NAME")
    add_table_parsers(p.add_subparsers(dest="action", required=True), ", ".join(PRESETS))
    return parser


def _new_spelling(argv: list[str]) -> list[str]:
    """Older spellings -> ``table ACTION NAME``: run --preset N, sweep --table N, table N, compare N."""
    if argv[:1] == ["table"] and len(argv) > 1 and argv[1] not in TABLE_ACTIONS and not argv[1].startswith("-"):
        return ["table", "summary", *argv[1:]]
    for old, flag in (("run", "--preset"), ("sweep", "--table")):
        if argv[:1] == [old] and flag in argv[:-1]:
            i = argv.index(flag)
            return ["table", old, argv[i + 1], *argv[1:i], *argv[i + 2:]]
    return ["table", *argv] if argv[:1] == ["compare"] else argv


COMMANDS = {"list": cmd_list, "train": cmd_train, "show": cmd_show, "run": cmd_run, "sweep": cmd_sweep,
            "summary": cmd_summary, "compare": cmd_compare, "estimate": cmd_estimate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_new_spelling(list(sys.argv[1:] if argv is None else argv)))
    init_from_env()                           # torchrun: join the process group (a no-op in one process)
    try:
        return COMMANDS[args.action if args.command == "table" else args.command](args)
    except (UnknownNameError, ValueError, FileNotFoundError, KeyError, Diverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, Diverged) else 2
