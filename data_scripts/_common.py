"""The command line shared by ``data_scripts.cremad``, ``.ave`` and ``.ucf101``.

Steps: ``download`` (only when asked) -> ``verify`` -> ``prepare`` (writes the cache) -> ``report``;
``all`` runs verify, prepare and report (and download first with ``--download``).
Exit codes: 0 usable, 1 unusable (no usable clip, an empty split, incomplete or damaged cache), 2 missing
or wrongly laid-out folder / unwritable cache folder / bad option, 3 download failed, 128 + the signal
(130 Ctrl-C, 143 SIGTERM) when stopped: one line, the worker pool ended, the cache resumable.
"""
from __future__ import annotations

import argparse
import csv
import os
import shlex
import signal
import sys
import tempfile
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from data_scripts._download import DownloadError
from data_scripts.cache import LayoutError, ScanResult, UnusableError, atomic_write_csv, run_prepare
from mmbal.data.cached import CacheError, open_cache

EXIT_OK, EXIT_UNUSABLE, EXIT_LAYOUT, EXIT_DOWNLOAD = 0, 1, 2, 3
SPLITS_DIR = Path(__file__).resolve().parent / "splits"
CATEGORIES = [("Git-LFS pointer", "Git-LFS pointer instead of media"), ("truncated", "truncated media"),
              ("missing", "missing file"), ("unreadable", "unreadable media"), ("cannot open", "unreadable media"),
              ("no audio", "no audio track"), ("frames at 1 fps", "too short for the frame count"),
              ("silent", "silent audio"), ("README", "known faulty (CREMA-D README)"),
              ("also in the val", "train video also in val/test"), ("already listed", "duplicate list line"),
              ("no clip with an audio track", "class without audio"), ("name does not follow", "unexpected file name"),
              ("unexpected error", "UNEXPECTED ERROR (please report)")]


def data_home() -> Path:
    return Path(os.environ.get("MMBAL_DATA", Path.home() / "mmbal_data")).expanduser()


def category(reason: str) -> str:
    return next((label for key, label in CATEGORIES if key in reason), "other")


@dataclass
class Spec:
    """What differs between datasets (the dataset module's own functions); everything else is shared."""

    name: str
    title: str
    description: str
    scan: Callable[..., ScanResult]                      # scan(raw, *, check_media, progress)
    process: Callable                                    # process(clip, config) -> frames, audio, info
    shapes: Callable[[dict], tuple[tuple, tuple]]        # config -> (frames_shape, audio_shape)
    config: Callable[[argparse.Namespace], dict]         # the protocol config from the CLI options
    make_splits: Callable[[argparse.Namespace, ScanResult], Callable]
    class_names: Callable[[ScanResult], list[str]]
    download: Callable[[argparse.Namespace], None]
    add_prepare_options: Callable[[argparse.ArgumentParser], None] = lambda p: None
    add_download_options: Callable[[argparse.ArgumentParser], None] = lambda p: None
    extra_commands: dict = field(default_factory=dict)   # name -> (help, add_args, func(args) -> int)


def print_skipped(rows: list[dict], *, show: int, where: str | None) -> None:
    """Counts per reason, with up to ``show`` clip names each; nothing left out silently."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["step"], category(r["reason"]))].append(r)
    for (step, cat), items in sorted(groups.items()):
        print(f"  {len(items):6,d}  {cat}  [{step}]")
        for r in items[:show]:
            print(f"            {r['clip']}: {r['reason']}")
        if len(items) > show:
            print(f"            ... and {len(items) - show:,} more" + (f" (all listed in {where})" if where else ""))


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot take a cache (one line), or None once it exists and a probe file could be written."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"cannot write the cache folder {folder}: {existing} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        return f"cannot write the cache folder {folder}: {err.strerror or err}"
    return None


def rebuild_command(spec: Spec, args) -> str:
    """The ``all`` command that rebuilds this cache: --raw and the options that shape it (not --workers, ...)."""
    parts = [f"data_scripts.{spec.name}", "all", "--raw", str(Path(args.raw).resolve())]
    for action in args.shaping:
        value = getattr(args, action.dest)
        if value != action.default:
            text = "x".join(map(str, value)) if isinstance(value, tuple) else str(value)
            parts += [action.option_strings[0], str(Path(text).resolve()) if action.dest.endswith("file") else text]
    return "python -m " + shlex.join(parts)


def cmd_verify(spec: Spec, args) -> tuple[int, ScanResult | None]:
    print(f"{spec.title}: verifying {args.raw}")
    try:
        scan = spec.scan(args.raw, check_media=True, progress=not args.no_progress)
    except LayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_LAYOUT, None
    for key, value in scan.counts.items():
        print(f"  {key:32s} {value:>8,}")
    usable = scan.usable()
    problems = [{"clip": c.clip, "step": "verify", "reason": c.problem} for c in scan.clips if c.problem]
    print(f"  {'usable clips':32s} {len(usable):>8,}")
    for note in scan.notes:
        print(f"  note: {note}")
    rows = scan.excluded + problems
    report = Path(args.cache) / "verify.csv"
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    atomic_write_csv(report, ["clip", "step", "reason"], rows)
    if rows:
        print(f"  left out: {len(rows):,} (protocol = the MLB protocol excludes it; verify = a problem with the file)")
        print_skipped(rows, show=args.show, where=str(report))
    if any(category(r["reason"]).startswith("Git-LFS") for r in problems):
        print(f"  hint: fetch the media of the Git-LFS pointers with: python -m data_scripts.{spec.name} download --raw {args.raw}")
    if not usable:
        print(f"{spec.title}: UNUSABLE - no usable clip in {args.raw}", file=sys.stderr)
        return EXIT_UNUSABLE, scan
    if args.strict and problems:
        print(f"{spec.title}: --strict and {len(problems)} files have problems", file=sys.stderr)
        return EXIT_UNUSABLE, scan
    return EXIT_OK, scan


def cmd_prepare(spec: Spec, args) -> int:
    rc, scan = cmd_verify(spec, args)
    if rc != EXIT_OK:
        return rc
    config = spec.config(args)
    frames_shape, audio_shape = spec.shapes(config)
    try:
        splitter = spec.make_splits(args, scan)
        result = run_prepare(args.cache, dataset=spec.name, scan=scan, process=spec.process, config=config,
                             frames_shape=frames_shape, audio_shape=audio_shape, make_splits=splitter,
                             class_names=spec.class_names(scan), workers=args.workers, force=args.force,
                             retry_skipped=args.retry_skipped, progress=not args.no_progress,
                             rebuild=rebuild_command(spec, args))
    except (UnusableError, ValueError, FileNotFoundError) as err:
        print(f"{spec.title}: UNUSABLE - {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    if not result.up_to_date:
        print(f"  processed {result.processed:,} clips now, reused {result.reused:,}, "
              f"left out {len(result.skipped):,} in total (see {Path(args.cache) / 'skipped.csv'})")
    return EXIT_OK


def cmd_report(spec: Spec, args) -> int:
    try:
        cache = open_cache(args.cache, dataset=spec.name)
    except CacheError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    meta = cache.meta
    size = sum(p.stat().st_size for p in Path(cache.root).iterdir() if p.is_file())
    print(f"{spec.title} cache at {cache.root} ({size / 1e9:.2f} GB)")
    print(f"  clips {meta['n_clips']:,}   left out {meta['n_skipped']:,}   classes {len(meta['class_names'])}")
    print(f"  frames {cache.frames.shape} {cache.frames.dtype}   spectrograms {cache.audio.shape} {cache.audio.dtype}")
    print(f"  protocol config: {meta['config']}")
    for fold, sizes in meta["split_sizes"].items():
        print(f"  fold {fold}: " + "  ".join(f"{p} {n:,}" for p, n in sizes.items()))
    topped = Counter(r["n_one_fps"] for r in cache.index)
    print("  clips by number of true 1-fps frames: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(topped.items())))
    for note in meta.get("notes", []):
        print(f"  note: {note}")
    with open(cache.root / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if rows:
        print(f"  left out ({len(rows):,}):")
        print_skipped(rows, show=args.show, where=str(cache.root / "skipped.csv"))
    print(f"  use it: mmbal.data.DATASETS.create({spec.name!r}, seed=109, root={str(cache.root)!r})"
          f"  or  python -m mmbal train --dataset {spec.name} --data-root {cache.root}")
    return EXIT_OK


def cmd_download(spec: Spec, args) -> int:
    try:
        spec.download(args)
    except DownloadError as err:
        print(f"download failed: {err}", file=sys.stderr)
        return EXIT_DOWNLOAD
    return EXIT_OK


def cmd_all(spec: Spec, args) -> int:
    if args.download and (rc := cmd_download(spec, args)) != EXIT_OK:
        return rc
    if (rc := cmd_prepare(spec, args)) != EXIT_OK:
        return rc
    return cmd_report(spec, args)


def _frame_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"wants HxW with positive sizes, e.g. 240x320, got {text!r}")
    return h, w


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"wants an integer >= {low}, got {text!r}")
        return value
    return parse


def build_parser(spec: Spec) -> argparse.ArgumentParser:
    home = data_home() / spec.name
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--raw", type=Path, default=home / "raw",
                        help=f"the dataset as downloaded (default: {home / 'raw'}; $MMBAL_DATA moves it)")
    common.add_argument("--cache", type=Path, default=home / "cache",
                        help=f"the cache folder the loaders read (default: {home / 'cache'})")
    common.add_argument("--show", type=at_least(0), default=20, help="clip names shown per skip reason (all go to a .csv)")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    common.add_argument("--strict", action="store_true", help="exit 1 if any file has a problem")
    prep = argparse.ArgumentParser(add_help=False)
    prep.add_argument("--workers", type=at_least(0), default=min(8, os.cpu_count() or 1), help="decoding processes (0 = in-process)")
    prep.add_argument("--frame-size", type=_frame_size, default=(240, 320), help="stored HxW of each frame (default 240x320)")
    prep.add_argument("--force", action="store_true", help="rebuild the cache from scratch")
    prep.add_argument("--retry-skipped", action="store_true", help="retry clips that failed in an earlier run")
    spec.add_prepare_options(prep)
    dl = argparse.ArgumentParser(add_help=False)
    spec.add_download_options(dl)
    parser = argparse.ArgumentParser(prog=f"python -m data_scripts.{spec.name}", description=spec.description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")
    sub.add_parser("download", parents=[common, dl], help="fetch the raw dataset into --raw (network; only when asked)")
    sub.add_parser("verify", parents=[common], help="check layout, counts, Git-LFS pointers and every media header")
    sub.add_parser("prepare", parents=[common, prep],
                   help="verify, then decode into the cache (resumable, atomic; repairs a damaged cache)")
    sub.add_parser("report", parents=[common],
                   help="summarise a finished cache: sizes, splits, everything left out (or what is damaged)")
    p_all = sub.add_parser("all", parents=[common, prep, dl], help="verify + prepare + report (download too with --download)")
    p_all.add_argument("--download", action="store_true", help="run the download step first")
    for name, (help_text, add_args, _) in spec.extra_commands.items():
        add_args(sub.add_parser(name, parents=[common], help=help_text))
    parser.set_defaults(shaping=[a for a in prep._actions                  # the options that shape a cache
                                 if a.dest not in ("help", "workers", "force", "retry_skipped")])
    return parser


def _stop(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(spec: Spec, argv: list[str] | None = None) -> int:
    """Run one step; SIGTERM and Ctrl-C end it with one line (and the worker pool), leaving a resumable cache."""
    args = build_parser(spec).parse_args(argv)
    commands = {"download": cmd_download, "verify": lambda s, a: cmd_verify(s, a)[0], "prepare": cmd_prepare,
                "report": cmd_report, "all": cmd_all}
    if args.command in ("verify", "prepare", "all") and (why := unwritable(Path(args.cache))):
        print(f"error: {why}", file=sys.stderr)
        return EXIT_LAYOUT
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main_thread else None
    try:
        if args.command in spec.extra_commands:
            return spec.extra_commands[args.command][2](args)
        return commands[args.command](spec, args)
    except KeyboardInterrupt as err:
        name = str(err) or "SIGINT"
        kept = f" in {args.cache / '.work'}" if args.command in ("prepare", "all") else ""
        print(f"{spec.title}: stopped by {name}; the work done so far is kept{kept}: rerun the same command "
              "to resume", file=sys.stderr)
        return 128 + signal.Signals[name].value
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
