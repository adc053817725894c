"""Forward + backward time of every encoder x fusion, relative to ResNet-18 + concat.

Input shapes are CREMA-D's (paper §4.2): a 257 x 188 log spectrogram and 3 RGB frames at 224 x 224;
the loss is the multi-loss objective (fused + unimodal CE). All pairs are timed in one process,
round-robin (every repeat visits every pair), so machine load drifts hit all pairs alike; the
table shows median time / median time of resnet18 + concat.

    python bench/encoders_fusions.py                       # CPU, batch 8, paper-sized encoders
    python bench/encoders_fusions.py --device cuda --batch-size 32 --repeats 10
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mmbal.models import ENCODERS, FUSIONS, MultimodalModel

NUM_CLASSES = 6                                              # CREMA-D emotions
RAW = {"audio": (1, 257, 188), "video": (3, 3, 224, 224)}
# The paper's Conformer inputs: wav2vec2 features (50 Hz x 3 s) and EfficientNet-B2 face features
# (30 fps x 3 s), here random tensors of those shapes (the extractors themselves are not timed).
FEATURES = {"audio": (150, 1024), "video": (90, 1408)}
ROWS = {"resnet18": ("resnet18", RAW), "conformer": ("conformer", RAW),
        "conformer (precomputed features)": ("conformer", FEATURES), "small_cnn": ("small_cnn", RAW)}


def token_count(encoders, shapes) -> int:
    """Tokens per sample the transformer fusion would attend over (all modalities together)."""
    with torch.no_grad():
        return sum(e.eval()(torch.zeros(1, *shapes[m])).shape[1] for m, e in encoders.items())


def build_pairs(rows, fusions, *, max_tokens: int, seed: int = 0):
    """(row, fusion) -> model, or a reason it is skipped; encoders are shared by a row's fusions."""
    pairs, inputs = {}, {}
    for row in rows:
        family, shapes = ROWS[row]
        torch.manual_seed(seed)
        encoders = {m: ENCODERS.create(family, modality=m, input_shape=s) for m, s in shapes.items()}
        dims = {m: e.out_dim for m, e in encoders.items()}
        inputs[row] = shapes
        tokens = token_count(encoders, shapes) if "transformer" in fusions else 0
        for fusion in fusions:
            if fusion == "transformer" and tokens > max_tokens:
                pairs[row, fusion] = f"skipped: {tokens} tokens > --max-tokens {max_tokens}"
                continue
            fused = FUSIONS.create(fusion, modalities=tuple(shapes), dims=dims, num_classes=NUM_CLASSES)
            pairs[row, fusion] = MultimodalModel(encoders, fused, NUM_CLASSES)
    return pairs, inputs


def step_seconds(model, batch, labels, device) -> float:
    """One forward + backward of the multi-loss objective, in seconds."""
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    logits = model(batch)["logits"]
    sum(F.cross_entropy(v, labels) for v in logits.values()).backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {list(ROWS)}")
    p.add_argument("--fusions", default=",".join(FUSIONS.names()))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--max-tokens", type=int, default=2048,
                   help="skip transformer fusion where a sample has more tokens (attention is quadratic)")
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",")]
    fusions = [f.strip() for f in args.fusions.split(",")]
    unknown = [r for r in rows if r not in ROWS] + [f for f in fusions if f not in FUSIONS]
    if unknown:
        raise SystemExit(f"unknown rows/fusions {unknown}; rows: {list(ROWS)}; fusions: {FUSIONS.names()}")
    if "resnet18" not in rows or "concat" not in fusions:
        raise SystemExit("the reference pair resnet18 + concat must be included")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    built, shapes = build_pairs(rows, fusions, max_tokens=args.max_tokens)
    skipped = {k: v for k, v in built.items() if isinstance(v, str)}
    pairs = {k: v.to(device).train() for k, v in built.items() if k not in skipped}
    g = torch.Generator().manual_seed(0)
    batches = {row: {m: torch.randn(args.batch_size, *s, generator=g).to(device) for m, s in shapes[row].items()}
               for row in rows}
    labels = torch.arange(args.batch_size, device=device) % NUM_CLASSES
    times = {key: [] for key in pairs}
    for r in range(args.warmup + args.repeats):
        for (row, fusion), model in pairs.items():
            t = step_seconds(model, batches[row], labels, device)
            if r >= args.warmup:
                times[row, fusion].append(t)
    median = {k: statistics.median(v) for k, v in times.items()}
    ref = median["resnet18", "concat"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"forward+backward time / (resnet18 + concat); batch {args.batch_size}, {name}, "
          f"median of {args.repeats} after {args.warmup} warm-up; reference = {ref:.3f} s/step")
    width = max(len(r) for r in rows)
    print("| " + "encoder".ljust(width) + " | " + " | ".join(f.rjust(11) for f in fusions) + " |")
    print("|" + "-" * (width + 2) + "|" + "|".join("-" * 12 + ":" for _ in fusions) + "|")
    for row in rows:
        cells = " | ".join("skipped".rjust(11) if (row, f) in skipped else f"{median[row, f] / ref:11.2f}"
                           for f in fusions)
        print(f"| {row.ljust(width)} | {cells} |")
    for (row, fusion), why in skipped.items():
        print(f"{row} + {fusion}: {why}")


if __name__ == "__main__":
    main()
