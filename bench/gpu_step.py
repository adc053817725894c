"""Samples/s of one MLB training step at each table's input shapes, fp32 eager against bf16 autocast + channels_last
(+ torch.compile), and the cached loader's samples/s with N workers, printed with their ratios (timings belong to
bench/, never to a test). On a CPU the variants are the same path (bf16 and channels_last are CUDA-only settings),
so there it only checks that everything runs.

    python bench/gpu_step.py --device cuda --compile                     # the four GPU tables' shapes
    python bench/gpu_step.py --small                                     # CPU smoke run: cremad_resnet18, small shapes
    python bench/gpu_step.py --tables cremad_resnet18 --cache ~/mmbal_data/cremad/cache --workers 0,4,8
    python bench/gpu_step.py --fabricate 20 --cache /tmp/cremad_cache --tables none   # a fabricated cache, loader only
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mmbal.config import DataConfig
from mmbal.data import DATASETS, make_loader
from mmbal.presets import DATASET_SHAPES, get_preset
from mmbal.train import build_trainer, resolve_device

GPU_TABLES = ("cremad_resnet18", "cremad_conformer", "ave_resnet18", "ucf101_resnet18")
SMALL = {"audio": [1, 64, 47], "video": [3, 3, 56, 56]}       # --small: cremad_resnet18 at a quarter resolution


def step_rate(table: str, *, device: str, batch: int, steps: int, warmup: int, shapes=None, **speed) -> float:
    """Training samples/s of the preset's MLB cell (main fusion) on one fixed batch of random tensors."""
    preset, data = get_preset(table), DATASET_SHAPES[get_preset(table).dataset]
    cfg = preset.run_config("mlb", device=device)
    cfg.data = DataConfig("random_tensors", batch_size=batch, options={
        "shapes": shapes or data["shapes"], "sizes": (batch, 1, 1), "num_classes": data["num_classes"]})
    cfg.amp, cfg.channels_last, cfg.compile = speed.get("amp", False), speed.get("channels_last", False), \
        speed.get("compile", False)
    trainer = build_trainer(cfg, DATASETS.create("random_tensors", seed=0, **cfg.data.options))
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d} if trainer.channels_last else {}
    inputs = {k: v.to(trainer.device, memory_format=fmt.get(v.dim(), torch.preserve_format))
              for k, v in next(iter(trainer.loaders["train"])).items()}
    trainer.model.train()
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for i in range(warmup):
        trainer._step(inputs, i)
    sync()
    start = time.perf_counter()
    for i in range(steps):
        trainer._step(inputs, i)
    sync()
    return steps * batch / (time.perf_counter() - start)


def loader_rates(cache: Path, *, workers: list[int], batch: int, batches: int, pin: bool) -> dict[int, float]:
    """Samples/s of the CREMA-D cached training loader (fold 0, train augmentation) per worker count, from the
    first batch on (worker start-up left out) over at most ``batches`` batches of one epoch."""
    train = DATASETS.create("cremad", seed=109, root=str(cache), fold=0).train
    rates = {}
    for n in workers:
        loader = make_loader(train, batch_size=batch, shuffle=True, seed=109, num_workers=n, pin_memory=pin)
        if len(loader) < batches + 2 * n:        # workers prefetch 2 batches each: they would all be ready
            rates[n] = float("nan")              # too few batches in an epoch of this cache to tell
            continue
        loader = iter(loader)
        next(loader)
        start, seen = time.perf_counter(), 0
        for _, b in zip(range(batches - 1), loader):
            seen += len(b["label"])
        rates[n] = seen / (time.perf_counter() - start)
    return rates


def fabricate_cache(cache: Path, actors: int) -> None:
    """A CREMA-D cache of fabricated clips (6 emotions x ``actors``, frames stored at 120 x 160)."""
    import tempfile

    from data_scripts import cremad, fabricate
    from data_scripts.cache import run_prepare
    with tempfile.TemporaryDirectory() as tmp:
        fabricate.fabricate_cremad(Path(tmp), actors=range(1001, 1001 + actors), fps=30, size=(360, 480))
        scan, config = cremad.scan(Path(tmp)), cremad.default_config(frame_size=(120, 160))
        folds = cremad.speaker_folds({c.group for c in scan.clips})
        run_prepare(cache, dataset="cremad", scan=scan, process=cremad.process, config=config,
                    frames_shape=cremad.shapes(config)[0], audio_shape=cremad.shapes(config)[1],
                    make_splits=lambda clips: cremad.splits_from_actor_folds(clips, folds, rule="bench"),
                    class_names=cremad.CREMAD_CLASSES, progress=False, log=lambda *_: None)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", default=None, help=f"comma-separated presets, or none (default: {','.join(GPU_TABLES)})")
    p.add_argument("--device", default="auto")
    p.add_argument("--small", action="store_true", help="cremad_resnet18 at small shapes, batch 4 (CPU smoke run)")
    p.add_argument("--batch", type=int, default=None, help="default: each preset's batch size (4 with --small)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time bf16 + channels_last + torch.compile")
    p.add_argument("--cache", type=Path, default=None, help="a CREMA-D cache: also time the cached loader")
    p.add_argument("--fabricate", type=int, default=0, metavar="ACTORS", help="first write a fabricated cache there")
    p.add_argument("--workers", default="0,4,8", help="loader worker counts (default: %(default)s)")
    p.add_argument("--loader-batches", type=int, default=20)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    torch.set_num_threads(1) if device.type == "cpu" else None
    tables = [] if args.tables == "none" else (args.tables or ("cremad_resnet18" if args.small else
                                                               ",".join(GPU_TABLES))).split(",")
    variants = {"fp32 eager": {}, "bf16 + channels_last": {"amp": True, "channels_last": True}}
    if args.compile:
        variants["bf16 + channels_last + compile"] = {"amp": True, "channels_last": True, "compile": True}
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    for table in tables:
        batch = args.batch or (4 if args.small else get_preset(table).batch_size)
        rates = {name: step_rate(table, device=str(device), batch=batch, steps=args.steps, warmup=args.warmup,
                                 shapes=SMALL if args.small else None, **speed) for name, speed in variants.items()}
        for name, rate in rates.items():
            print(f"{table:<18} {name:<32} {rate:9.1f} samples/s  x{rate / rates['fp32 eager']:.2f}  (batch {batch})")
    if args.cache is not None:
        if args.fabricate and not (args.cache / "meta.json").exists():
            fabricate_cache(args.cache, args.fabricate)
        rates = loader_rates(args.cache, workers=[int(w) for w in args.workers.split(",")], batch=args.batch or 16,
                             batches=args.loader_batches, pin=device.type == "cuda")
        for n, rate in rates.items():
            print(f"cached loader      {n:>2} workers {'':<21} {rate:9.1f} samples/s  x{rate / rates[min(rates)]:.2f}"
                  + ("  (an epoch of this cache has too few batches)" if rate != rate else ""))


if __name__ == "__main__":
    main()
