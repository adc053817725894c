"""Command line: ``python -m mmbal list`` and ``python -m mmbal train ...``."""
from __future__ import annotations

import argparse
import json
import sys

from mmbal.registry import UnknownNameError


def _key_value(text: str) -> tuple[str, object]:
    """Parse ``key=value``; the value is JSON when it parses (numbers, true, null), else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def registries() -> dict:
    from mmbal.balancers import BALANCERS
    from mmbal.data import DATASETS
    from mmbal.models import ENCODERS, FUSIONS
    from mmbal.objectives import OBJECTIVES
    from mmbal.regimes import REGIMES

    return {"datasets": DATASETS, "encoders": ENCODERS, "fusions": FUSIONS,
            "objectives": OBJECTIVES, "balancers": BALANCERS, "regimes": REGIMES}


def cmd_list(args) -> int:
    for title, registry in registries().items():
        print(f"{title}:")
        for name, doc in registry.describe().items():
            print(f"  {name:<20} {doc}")
    return 0


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by every command that trains (dataset, model, method, optimisation)."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits_av")
    g.add_argument("--data-root", default=None, help="cache folder written by data_scripts/")
    g.add_argument("--data-opt", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. image_noise=1.0 (repeatable)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--num-workers", type=int, default=0)
    g = p.add_argument_group("model")
    g.add_argument("--encoder", default="small_cnn")
    g.add_argument("--fusion", default="concat")
    g.add_argument("--encoder-opt", type=_key_value, action="append", default=[], metavar="KEY=VALUE")
    g.add_argument("--fusion-opt", type=_key_value, action="append", default=[], metavar="KEY=VALUE")
    g = p.add_argument_group("method")
    g.add_argument("--objective", default=None, help="joint | multi_loss (default: the method's own)")
    g.add_argument("--balancer", default="none")
    g.add_argument("--alpha", type=float, default=None)
    g.add_argument("--beta-max", type=float, default=None)
    g.add_argument("--acts-on", choices=("gradient", "update"), default=None,
                   help="scale the gradient (paper) or the update (learning rate) of a modality")
    g.add_argument("--balancer-opt", type=_key_value, action="append", default=[], metavar="KEY=VALUE")
    g.add_argument("--regime", default=None,
                   help="unimodal | ensemble | uni_pre_frozen | uni_pre_finetuned (default: none)")
    g.add_argument("--regime-opt", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="regime option, e.g. modality=audio (repeatable)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default="sgd", help="sgd | adam | adamw")
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--schedule", default="cosine", help="cosine | constant")
    g.add_argument("--epochs", type=int, default=20)
    g.add_argument("--early-stop", type=int, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto")
    g.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    g.add_argument("--no-progress", action="store_true")


def config_from_args(args):
    from mmbal.balancers import paper_objective
    from mmbal.config import (BalancerConfig, DataConfig, ModelConfig, ObjectiveConfig, OptimConfig,
                              RunConfig)

    balancer_options = dict(args.balancer_opt)
    for key, value in (("alpha", args.alpha), ("beta_max", args.beta_max), ("acts_on", args.acts_on)):
        if value is not None:
            balancer_options[key] = value
    return RunConfig(
        data=DataConfig(name=args.dataset, root=args.data_root, options=dict(args.data_opt),
                        batch_size=args.batch_size, num_workers=args.num_workers),
        model=ModelConfig(encoder=args.encoder, fusion=args.fusion,
                          encoder_options=dict(args.encoder_opt), fusion_options=dict(args.fusion_opt)),
        objective=ObjectiveConfig(name=args.objective or paper_objective(args.balancer, balancer_options)),
        balancer=BalancerConfig(name=args.balancer, options=balancer_options),
        optim=OptimConfig(name=args.optimizer, lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay, schedule=args.schedule, epochs=args.epochs,
                          early_stop=args.early_stop),
        seed=args.seed, device=args.device, amp=args.amp, progress=not args.no_progress,
        regime=args.regime, regime_options=dict(args.regime_opt))


def summary_table(record: dict) -> str:
    import pandas as pd

    table = pd.DataFrame(record["test"]).T[["accuracy", "macro_f1", "ece"]]
    table.index.name = "test head"
    return table.round(4).to_string()


def cmd_train(args) -> int:
    from mmbal.experiments import run, write_json

    record, _, _ = run(config_from_args(args))
    print(f"best epoch {record['best_epoch'] + 1} (val {record['val']['mm']['accuracy']:.4f}), "
          f"{record['seconds']:.1f} s")
    print(summary_table(record))
    if args.out:
        print(f"wrote {write_json(record, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmbal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered datasets, encoders, fusions, objectives, balancers")
    p = sub.add_parser("train", help="train one model and write a result JSON")
    add_run_arguments(p)
    p.add_argument("--out", default=None, help="result JSON path")
    from mmbal.cli_experiments import add_experiment_parsers

    add_experiment_parsers(sub)  # run, sweep, table
    return parser


from mmbal.cli_experiments import EXPERIMENT_COMMANDS  # noqa: E402

COMMANDS = {"list": cmd_list, "train": cmd_train, **EXPERIMENT_COMMANDS}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UnknownNameError, ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
