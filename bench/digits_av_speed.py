"""Where a Digits-AV run spends its time, and per-run seconds of one setting against another as a ratio.

Profiles one cell (cProfile, 1 torch thread) and splits its wall time into: data pairing / augmentation
(re-drawing pairs, frames, noise and spectrograms each epoch), the training steps' forward pass, backward
pass and optimizer step, evaluation (val + test every epoch), and the rest (trace, bookkeeping). Then times
a full run of the ``before`` and ``after`` settings and prints after / before.

``--throughput`` instead counts the floating-point operations of one training step (forward + backward,
torch.utils.flop_counter) of a cell at each fusion, times a few hundred steps on one thread, and prints the
achieved GFLOP/s against a large matrix product on the same thread: how close a step is to what the core can do,
and so how far a faster implementation of the same step could go.

``--pool`` trains the same cell twice, once with PyTorch's max-pool kernel everywhere in the small CNNs and once
with ``MaxPool2x2`` (which skips the kernel where nothing is trained, i.e. in evaluation), checks that the two
records are identical and prints the per-run seconds as a ratio.

    python bench/digits_av_speed.py                                    # digits_av_v2 joint vs width-8 encoders
    python bench/digits_av_speed.py --preset digits_av --epochs 20     # the first Digits-AV setting
    python bench/digits_av_speed.py --after-encoder-opt norm=batch --after-data-opt audio_uninformative_frac=0.15
    python bench/digits_av_speed.py --throughput --method mlb
    python bench/digits_av_speed.py --pool --method mlb                # and --fusion transformer
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from contextlib import nullcontext
from dataclasses import replace
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmbal.data import DATASETS
from mmbal.experiments import run
from mmbal.models.small_cnn import MaxPool2x2
from mmbal.presets import get_preset
from mmbal.train import build_trainer

# (label, file suffix, function name contains); the model forward counts training and evaluation passes
PARTS = (("data pairing / augmentation", "digits_av.py", "_draw"), ("training steps", "train.py", "_step"),
         ("  backward", "", "run_backward"), ("  optimizer step", "sgd.py", "step"),
         ("evaluation (val + test, every epoch)", "train.py", "evaluate"))


def config(preset: str, method: str, epochs: int | None, data: dict, encoder: dict, seed: int = 109,
           fusion: str = "concat"):
    """``preset``'s cell with its data and encoder options updated; ``epochs`` None keeps the preset's."""
    cfg = get_preset(preset).run_config(method, fusion, seed=seed, epochs=epochs, device="cpu")
    return replace(cfg, data=replace(cfg.data, options={**cfg.data.options, **data}),
                   model=replace(cfg.model, encoder_options={**cfg.model.encoder_options, **encoder}))


def profile(cfg) -> None:
    """Print the wall time of one run split into PARTS (cumulative cProfile times; the rest is the remainder)."""
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.runcall(run, cfg)
    wall = time.perf_counter() - start
    stats = pstats.Stats(prof).stats                            # (file, line, name) -> (cc, nc, tt, ct, callers)
    print(f"profile of {cfg.optim.epochs} epochs, {cfg.objective.name}: {wall:.1f} s wall")
    for label, suffix, name in PARTS:
        seconds = max((v[3] for (f, _, n), v in stats.items() if name in n and f.endswith(suffix)), default=0.0)
        print(f"  {label:30s} {seconds:6.2f} s  {100 * seconds / wall:5.1f} %")
    top = sorted(((v[2], n) for (_, _, n), v in stats.items()), reverse=True)[:6]
    print("  largest own times: " + ", ".join(f"{n} {t:.2f} s" for t, n in top))


def matmul_gflops(n: int = 512, repeats: int = 20) -> float:
    """GFLOP/s of an (n, n) @ (n, n) product on this thread: near what one core can reach."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def step_throughput(cfg, steps: int = 200) -> tuple[float, float]:
    """(GFLOP per training step, achieved GFLOP/s) of ``cfg``'s training step on batches of its train split."""
    splits = DATASETS.create(cfg.data.name, seed=cfg.seed, **cfg.data.options)
    trainer = build_trainer(cfg, splits)
    trainer.ddp.train()
    batches = [b for _, b in zip(range(10), trainer.loaders["train"])]      # 10 batches of the epoch-0 pairing
    with FlopCounterMode(display=False) as counter:
        trainer._step(batches[0], 0)
    flop = counter.get_total_flops() / 1e9
    start = time.perf_counter()
    for i in range(steps):
        trainer._step(batches[i % len(batches)], i)
    seconds = (time.perf_counter() - start) / steps
    return flop, flop / seconds


def throughput(preset: str, method: str) -> None:
    peak = matmul_gflops()
    print(f"one thread: a 512x512 matrix product runs at {peak:.1f} GFLOP/s")
    for fusion in ("concat", "transformer"):
        flop, rate = step_throughput(config(preset, method, 1, {}, {}, fusion=fusion))
        print(f"  {method}, {fusion:11s}: {1e3 * flop:7.1f} MFLOP per step, {rate:5.1f} GFLOP/s = "
              f"{rate / peak:.2f} of the matrix product; {1e3 * flop / rate:.1f} ms per step")


def without_clock(record: dict) -> list[dict]:
    """A run's per-epoch history without its wall-clock times."""
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in record["history"]]


def pool_ratio(preset: str, method: str, epochs: int | None, fusion: str) -> None:
    """Per-run seconds with MaxPool2x2 over those with PyTorch's kernel in every forward pass; identical records."""
    cfg = config(preset, method, epochs, {}, {}, fusion=fusion)
    records = {}
    for label in ("kernel", "MaxPool2x2"):
        kernel_only = mock.patch.object(MaxPool2x2, "forward", lambda self, x: torch.nn.functional.max_pool2d(x, 2))
        with kernel_only if label == "kernel" else nullcontext():
            records[label] = run(cfg).record
        print(f"{label:10s}: {records[label]['seconds']:.1f} s per run ({method}, {fusion}, {cfg.optim.epochs} epochs), "
              f"test fused accuracy {records[label]['test']['mm']['accuracy']:.4f}")
    for key in ("test", "val", "best_epoch", "linear_probe"):
        assert records["kernel"].get(key) == records["MaxPool2x2"].get(key), f"records differ in {key!r}"
    assert without_clock(records["kernel"]) == without_clock(records["MaxPool2x2"]), "per-epoch histories differ"
    print(f"identical records; MaxPool2x2 / kernel = "
          f"{records['MaxPool2x2']['seconds'] / records['kernel']['seconds']:.2f}")


def kv(pairs: list[str]) -> dict:
    return {k: (int(v) if v.isdigit() else float(v) if v.replace(".", "", 1).isdigit() else v)
            for k, v in (p.split("=", 1) for p in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="digits_av_v2", help="a Digits-AV preset (default: digits_av_v2)")
    parser.add_argument("--method", default="joint")
    parser.add_argument("--fusion", default="concat", help="fusion of the --pool runs (default: concat)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the timed runs (default: the preset's)")
    parser.add_argument("--profile-epochs", type=int, default=3)
    parser.add_argument("--after-data-opt", nargs="*", default=[])
    parser.add_argument("--after-encoder-opt", nargs="*", default=["width=8"])
    parser.add_argument("--throughput", action="store_true", help="FLOP per step and GFLOP/s instead of timing runs")
    parser.add_argument("--pool", action="store_true", help="MaxPool2x2 against PyTorch's max-pool kernel")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.throughput:
        return throughput(args.preset, args.method)
    if args.pool:
        return pool_ratio(args.preset, args.method, args.epochs, args.fusion)
    profile(config(args.preset, args.method, args.profile_epochs, {}, {}))
    seconds = {}
    for label, data, encoder in (("before", {}, {}), ("after", kv(args.after_data_opt), kv(args.after_encoder_opt))):
        cfg = config(args.preset, args.method, args.epochs, data, encoder)
        seconds[label] = run(cfg).record["seconds"]
        print(f"{label}: {data | encoder or args.preset}: {seconds[label]:.1f} s per run ({cfg.optim.epochs} epochs)")
    print(f"after / before = {seconds['after'] / seconds['before']:.2f}")


if __name__ == "__main__":
    main()
