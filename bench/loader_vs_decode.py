"""Samples/s of the cached loader vs decoding the raw media for the same samples, as a ratio.

Both paths yield the same training sample (paper §4.2 transforms: RandomResizedCrop + flip +
ImageNet normalisation): the cached one reads memory-mapped uint8 frames and float16 spectrograms;
the decode one opens the WAV and FLV, resamples, computes the STFT and extracts 1-fps frames, as a
loader without a cache would. Without --raw, a small CREMA-D-like folder at CREMA-D's own resolution
(480 x 360, 30 fps, 2.5 s clips) is fabricated in a temporary folder.

    python bench/loader_vs_decode.py                                  # fabricated, 36 clips
    python bench/loader_vs_decode.py --raw ~/mmbal_data/cremad/raw --cache ~/mmbal_data/cremad/cache -n 200
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from data_scripts import cremad, fabricate
from data_scripts.cache import run_prepare
from mmbal.data.cached import CachedAVDataset, FrameTransform, open_cache, sample_seed


def fabricated(root: Path, *, actors: int) -> tuple[Path, Path]:
    raw, cache = root / "raw", root / "cache"
    fabricate.fabricate_cremad(raw, actors=range(1001, 1001 + actors), fps=30, size=(360, 480))
    scan = cremad.scan(raw)
    config = cremad.default_config()
    folds = cremad.speaker_folds({c.group for c in scan.clips})
    run_prepare(cache, dataset="cremad", scan=scan, process=cremad.process, config=config,
                frames_shape=cremad.shapes(config)[0], audio_shape=cremad.shapes(config)[1],
                make_splits=lambda clips: cremad.splits_from_actor_folds(clips, folds, rule="bench"),
                class_names=cremad.CREMAD_CLASSES, progress=False, log=lambda *_: None)
    return raw, cache


def rate(fn, n: int) -> float:
    fn(0)                                                          # warm-up: imports, kernel caches
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", type=Path, help="a CREMA-D folder (AudioWAV/, VideoFlash/)")
    p.add_argument("--cache", type=Path, help="its cache, written by python -m data_scripts.cremad prepare")
    p.add_argument("-n", type=int, default=36, help="samples per path")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--actors", type=int, default=6, help="fabricated actors (6 emotions each)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)                                       # one loader worker's view
    with tempfile.TemporaryDirectory() as tmp:
        raw, cache = (args.raw, args.cache) if args.raw else fabricated(Path(tmp), actors=args.actors)
        cached_data = open_cache(cache, dataset="cremad")                 # every clip, in cache-row order
        index = cached_data.index
        dataset = CachedAVDataset(cache, [r["row"] for r in index], [r["label"] for r in index],
                                  class_names=cremad.CREMAD_CLASSES, train=True, seed=109, image_size=args.image_size)
        n = min(args.n, len(dataset))
        clips = {c.clip: c for c in cremad.scan(raw, check_media=False).clips}
        transform = FrameTransform(train=True, image_size=args.image_size)

        def from_cache(i: int):
            return dataset[i % len(dataset)]

        def from_media(i: int):                                          # the same clip as from_cache(i)
            clip = clips[index[i % len(index)]["clip"]]
            frames, spec, _ = cremad.process(clip, cached_data.meta["config"])
            return {"audio": torch.from_numpy(spec)[None], "video": transform(frames, sample_seed(109, 0, i))}

        cached, decoded = rate(from_cache, n), rate(from_media, n)
    print(f"cached loader : {cached:8.1f} samples/s")
    print(f"decode media  : {decoded:8.1f} samples/s")
    print(f"ratio cached / decode = {cached / decoded:.1f}x  (n={n}, image {args.image_size}, 1 thread)")


if __name__ == "__main__":
    main()
