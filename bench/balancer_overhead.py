"""Step time of every balancer relative to multi_loss + balancer "none" (same model, same batch).

One process, one batch, every method built once; repetitions are interleaved (each round times
one step of every method in a shuffled order) and the median per method is divided by the
baseline's median. Model: ResNet-18 encoders at CREMA-D shapes (audio 1x257x188 spectrogram,
video 3 frames of 3x224x224) when ``resnet18`` is registered, else the small CNN at Digits-AV shapes.

    python bench/balancer_overhead.py                       # CPU, batch 4, 7 rounds
    python bench/balancer_overhead.py --batch-size 32 --rounds 15 --device cuda
    python bench/balancer_overhead.py --batch-size 32 --rounds 5 --methods ogm,ogm_ge,mlb   # a subset

Targets: <= 1.03 for the gradient-scaling methods (OGM, OGM-GE, MSLR, MLB) and for the per-step part of
ReconBoost, D&R and G-Blending, <= 1.15 for the methods with extra passes (AGM, PMR); MMPareto's extra
backward pass (the multimodal loss's encoder gradients) has no target. Per-epoch work is not part of a
step; it is reported separately as its cost over one CREMA-D epoch (127 steps of batch 32): PMR's
prototype pass, G-Blending's loss estimate (eval passes over the training set and its held-out part, every
``every`` epochs) and D&R's diagnosis (features of the training set and its held-out part, k-means per
modality), which runs every ``reinit_every`` epochs only (3 times in all).
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import time

import torch

from mmbal.balancers import BALANCERS, EpochContext
from mmbal.balancers.dnr import features_of, purity
from mmbal.balancers.gblending import head_losses
from mmbal.config import OptimConfig
from mmbal.data.base import DatasetSplits
from mmbal.data.tensor_dataset import TensorSplit
from mmbal.models import ENCODERS, build_model
from mmbal.objectives import OBJECTIVES
from mmbal.train import Trainer

CREMAD = {"audio": (1, 257, 188), "video": (3, 3, 224, 224)}
DIGITS = {"audio": (1, 64, 30), "video": (1, 3, 16, 16)}
# label -> (balancer, its options); MLB's ablation variants are methods of their own here
METHODS = {"baseline": ("none", {}), "mslr": ("mslr", {"init_scale": {"audio": 0.7, "video": 1.3}}),
           "fixed": ("fixed", {"coefficients": {"audio": 0.8, "video": 1.5}}),
           "mlb_stopgrad": ("mlb", {"variant": "stopgrad"}), "mlb_fused": ("mlb", {"variant": "fused"})}
TARGET = {"ogm": 1.03, "ogm_ge": 1.03, "mslr": 1.03, "mlb": 1.03, "mlb_stopgrad": 1.03, "mlb_fused": 1.03,
          "fixed": 1.03, "agm": 1.15, "pmr": 1.15, "reconboost": 1.03, "dnr": 1.03, "gblending": 1.03}


def method(label: str) -> tuple[str, dict, str]:
    """(balancer name, options, objective) of a benchmarked method; the baseline trains multi-loss."""
    name, options = METHODS.get(label, (label, {}))
    return name, options, "multi_loss" if label == "baseline" else BALANCERS.create(name, **options).objective


def labels() -> list[str]:
    """Every method that can be timed: each balancer and MLB's two ablation variants."""
    return [*BALANCERS.names(), "mlb_stopgrad", "mlb_fused"]
CREMAD_TRAIN = 4043
CREMAD_STEPS_PER_EPOCH = math.ceil(CREMAD_TRAIN / 32)


def build_trainers(shapes, encoder, batch, device, num_classes, names=None):
    """One Trainer per method (each with its own identically initialised model)."""
    data = TensorSplit({m: batch[m].cpu() for m in shapes}, batch["label"].cpu(),
                       class_names=[str(c) for c in range(num_classes)])
    splits = DatasetSplits(data, data, data)
    trainers = {}
    for label in ["baseline", *(names or labels())]:
        name, options, objective = method(label)
        torch.manual_seed(0)
        model = build_model(input_shapes=shapes, num_classes=num_classes, encoder=encoder)
        trainers[label] = Trainer(model, OBJECTIVES.create(objective), BALANCERS.create(name, **options),
                                  splits, optim=OptimConfig(epochs=1), batch_size=len(data), device=device,
                                  progress=False)
    return trainers


def timed_step(trainer: Trainer, batch: dict, clock) -> float:
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    start = clock()
    trainer._step(batch, 0)          # exactly the trainer's step: forward, losses, backward, hooks, step
    sync()
    return clock() - start


class HookTimer:
    """Wraps a balancer's ``loss`` and ``after_backward`` hooks and accumulates their time: the
    whole extra work of a gradient-scaling method, measured without the step's noise."""

    def __init__(self, balancer, clock):
        self.total, self.calls = 0.0, 0
        for name in ("loss", "after_backward"):
            setattr(balancer, name, self._timed(getattr(balancer, name), clock))

    def _timed(self, fn, clock):
        def wrapper(*args, **kwargs):
            start = clock()
            out = fn(*args, **kwargs)
            self.total += clock() - start
            return out
        return wrapper

    def per_step(self, steps: int) -> float:
        return self.total / max(1, steps)


def prototype_pass(trainer: Trainer, clock) -> float:
    """Time of PMR's epoch-start prototype pass over the (one-batch) loader."""
    start = clock()
    trainer.balancer.on_epoch_start(EpochContext(epoch=1, model=trainer.model, train_loader=trainer.loaders["train"],
                                                 device=trainer.device, history=[]))
    trainer.model.train()
    return clock() - start


def per_epoch_costs(trainers: dict, batch: dict, clock, base: float) -> None:
    """G-Blending's and D&R's epoch-start work over one CREMA-D epoch, as a fraction of its steps' time."""
    epoch = CREMAD_TRAIN * base / len(batch["label"])          # an epoch's steps at this batch's per-sample time
    per_sample = {}
    for label, fn in (("gblending", lambda t: head_losses(t.model, [batch], t.device)),
                      ("dnr", lambda t: features_of(t.model, [batch], t.device))):
        if label in trainers:
            start = clock()
            fn(trainers[label])
            per_sample[label] = (clock() - start) / len(batch["label"])
            trainers[label].model.train()
    if "gblending" in per_sample:
        gb = trainers["gblending"].balancer
        cost = CREMAD_TRAIN * per_sample["gblending"]              # the training set, and the held-out part
        print(f"gblending loss estimate: {cost:.2f} s per estimate (eval passes over a CREMA-D training set), "
              f"{cost / epoch:.3f} of an epoch's step time; every {gb.every} epochs")
    if "dnr" in per_sample:
        dnr = trainers["dnr"].balancer
        dim = trainers["dnr"].model.encoders["audio"].out_dim
        start = clock()
        purity(torch.randn(CREMAD_TRAIN, dim).numpy(), (torch.arange(CREMAD_TRAIN) % 6).numpy(), 6)
        cost = (1 + dnr.holdout) * CREMAD_TRAIN * per_sample["dnr"] + 2 * (1 + dnr.holdout) * (clock() - start)
        print(f"dnr diagnosis: {cost:.2f} s per re-init (features of a CREMA-D training set + held-out part, "
              f"k-means per modality), {cost / epoch:.3f} of an epoch's step time; every {dnr.reinit_every} "
              f"epochs, {dnr.reinit_times} times")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small", action="store_true", help="small CNN at Digits-AV shapes")
    parser.add_argument("--methods", default=None,
                        help="comma-separated balancers to time against the baseline (default: all)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default=None,
                        help="cpu: this process's CPU time (robust on a shared machine; default on CPU); "
                             "wall: elapsed time (default on CUDA)")
    args = parser.parse_args(argv)
    clock_name = args.clock or ("wall" if args.device.startswith("cuda") else "cpu")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    use_resnet = "resnet18" in ENCODERS and not args.small
    shapes, encoder = (CREMAD, "resnet18") if use_resnet else (DIGITS, "small_cnn")
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    batch = {m: torch.randn(args.batch_size, *s, generator=g) for m, s in shapes.items()}
    batch["label"] = torch.arange(args.batch_size) % 6
    names = None if args.methods is None else [m for m in args.methods.split(",") if m]
    unknown = sorted(set(names or ()) - set(labels()))
    if unknown:
        parser.error(f"unknown balancers {unknown}; valid: {', '.join(labels())}")
    trainers = build_trainers(shapes, encoder, batch, str(device), num_classes=6, names=names)
    batch = {k: v.to(device) for k, v in batch.items()}
    print(f"model: {encoder} at {'CREMA-D' if use_resnet else 'Digits-AV'} shapes {shapes}, batch "
          f"{args.batch_size}, device {device}, {args.threads} thread(s), {args.rounds} interleaved rounds, "
          f"{clock_name} clock")

    for trainer in trainers.values():           # epoch-start hooks (PMR's first prototypes)
        trainer.balancer.on_epoch_start(EpochContext(epoch=0, model=trainer.model, device=trainer.device,
                                                     train_loader=trainer.loaders["train"], history=[],
                                                     holdout_loader=trainer.loaders.get("holdout")))
        trainer.model.train()
    timers = {label: HookTimer(t.balancer, clock) for label, t in trainers.items()}
    times: dict[str, list[float]] = {label: [] for label in trainers}
    proto: list[float] = []
    order = list(trainers)
    for r in range(args.warmup + args.rounds):
        random.Random(r).shuffle(order)
        for label in order:
            t = timed_step(trainers[label], batch, clock)
            if r >= args.warmup:
                times[label].append(t)
        if r >= args.warmup and "pmr" in trainers:
            proto.append(prototype_pass(trainers["pmr"], clock))
    base = statistics.median(times["baseline"])
    print(f"\nbaseline (multi_loss, none): median step {base * 1e3:.1f} ms\n")
    steps = args.warmup + args.rounds
    print(f"{'balancer':<14}{'objective':<12}{'median ms':>10}{'ratio':>8}{'min ratio':>10}"
          f"{'hooks ms':>10}{'hooks/step':>11}{'target':>8}  ok")
    best = min(times["baseline"])
    for label in sorted(times, key=lambda k: (k != "baseline", k)):
        med = statistics.median(times[label])
        objective = method(label)[2]
        hooks = timers[label].per_step(steps)
        target = TARGET.get(label)
        ok = "" if target is None else ("yes" if med / base <= target else "NO")
        print(f"{label:<14}{objective:<12}{med * 1e3:>10.1f}{med / base:>8.3f}{min(times[label]) / best:>10.3f}"
              f"{hooks * 1e3:>10.2f}{hooks / base:>11.4f}{'' if target is None else f'{target:.2f}':>8}  {ok}")
    print("\nratio: median step / baseline median; min ratio: fastest step / fastest baseline step; hooks: time "
          "inside the balancer's loss and after_backward hooks per step (AGM's and MMCosine's extra work is in "
          "their forward hook and in backward, so it shows only in the step ratios)")
    per_epoch_costs(trainers, batch, clock, base)
    if "pmr" not in trainers:
        return
    pmr_epoch_pass = statistics.median(proto)
    refresh = trainers["pmr"].balancer.refresh_fraction
    per_epoch = math.ceil(refresh * CREMAD_STEPS_PER_EPOCH) * pmr_epoch_pass
    print(f"\npmr prototype refresh: {pmr_epoch_pass * 1e3:.1f} ms per batch (eval pass); "
          f"{refresh:.0%} of a CREMA-D epoch's {CREMAD_STEPS_PER_EPOCH} batches adds "
          f"{per_epoch / (CREMAD_STEPS_PER_EPOCH * base):.3f} of an epoch's step time")


if __name__ == "__main__":
    main()
