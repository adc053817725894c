"""The dataset-independent half of data preparation: resumable, parallel, every skip named.

A dataset module supplies ``scan`` (what the raw folder holds, with a problem per bad clip),
``process`` (one clip -> frames, spectrogram) and ``make_splits``; ``run_prepare`` does the rest.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mmbal.data.cache_store import (DONE, SKIPPED, TODO, CacheWriter, atomic_write_json, cache_key,
                                    complete_cache_key)
from mmbal.data.media import MediaError


class LayoutError(Exception):
    """The raw dataset folder is missing or laid out differently; the message names the folder."""


class UnusableError(Exception):
    """Preparation finished but the result cannot train a model (e.g. an empty split)."""


@dataclass
class Clip:
    """One candidate sample of a dataset, before decoding."""

    clip: str                 # unique id: file stem, or video id + segment
    label: int
    label_name: str
    group: str                # actor (CREMA-D), video id (AVE), Class_gXX (UCF101)
    inputs: dict              # paths and segment bounds that ``process`` needs
    problem: str | None = None  # why verify rejected it (LFS pointer, unreadable, ...)


@dataclass
class ScanResult:
    """What ``scan`` found: candidate clips, files the protocol leaves out, counts and notes."""

    clips: list[Clip]
    excluded: list[dict] = field(default_factory=list)   # {"clip", "step", "reason"} (protocol / layout)
    counts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)            # dataset-specific (e.g. official split lists)

    def usable(self) -> list[Clip]:
        return [c for c in self.clips if c.problem is None]


@dataclass
class PrepareResult:
    processed: int
    reused: int
    skipped: list[dict]
    n_ok: int
    up_to_date: bool = False


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _work(process: Callable, clip: Clip, config: dict):
    try:
        return "ok", process(clip, config)
    except MediaError as err:
        return "skip", str(err)
    except Exception as err:  # noqa: BLE001 - a bug on one clip must not cost hours of work
        return "skip", f"unexpected error while processing {clip.clip}: {type(err).__name__}: {err}"


def _results(process, jobs, config, workers):
    """Yield (row, status, payload) for every job; in-process when workers == 0."""
    if workers <= 0:
        for row, clip in jobs:
            yield row, *_work(process, clip, config)
        return
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        pending, it = {}, iter(jobs)
        while True:
            while len(pending) < 4 * workers:
                nxt = next(it, None)
                if nxt is None:
                    break
                pending[pool.submit(_work, process, nxt[1], config)] = nxt[0]
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield pending.pop(fut), *fut.result()


def run_prepare(cache_root: str | Path, *, dataset: str, scan: ScanResult, process: Callable,
                config: dict, frames_shape: tuple, audio_shape: tuple, make_splits: Callable,
                class_names: list[str], workers: int = 0, force: bool = False,
                retry_skipped: bool = False, progress: bool = True, log: Callable = print,
                flush_every: int = 32) -> PrepareResult:
    """Decode every usable clip into the cache at ``cache_root``; resume, skip and report as needed."""
    from tqdm import tqdm

    root = Path(cache_root)
    root.mkdir(parents=True, exist_ok=True)
    ids = [c.clip for c in scan.clips]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{dataset}: clip ids are not unique")
    desc = {"dataset": dataset, "config": config}
    key = cache_key(ids=ids, frames_shape=frames_shape, audio_shape=audio_shape, description=desc)
    if not force and not retry_skipped and complete_cache_key(root) == key and not _newly_usable(root, scan):
        n_ok = _refresh_splits(root, scan, make_splits, log=log)
        log(f"{dataset}: cache at {root} is complete and up to date; nothing to decode")
        return PrepareResult(0, n_ok, [], n_ok, up_to_date=True)
    writer = CacheWriter(root, ids=ids, frames_shape=frames_shape, audio_shape=audio_shape,
                         description=desc, force=force)
    if writer.resumed:
        log(f"{dataset}: resuming: {int((writer.status == DONE).sum())} of {len(ids)} clips already in {root / '.work'}")
    # verify verdicts are re-evaluated on every run: a fixed file is picked up, a broken one is skipped
    for row, clip in enumerate(scan.clips):
        step = writer.rows.get(clip.clip, {}).get("step")
        if clip.problem is not None and writer.status[row] == TODO:     # clips already cached stay
            writer.status[row] = SKIPPED
            writer.rows[clip.clip] = {"reason": clip.problem, "step": "verify"}
        elif clip.problem is None and writer.status[row] == SKIPPED and step == "verify":
            writer.status[row] = TODO
    todo = writer.todo(retry_skipped=retry_skipped)
    todo = [r for r in todo if scan.clips[r].problem is None]
    reused = int((writer.status == DONE).sum())
    log(f"{dataset}: {len(todo)} clips to process, {reused} reused, workers={workers}")
    processed, last_flush = 0, time.monotonic()
    bar = tqdm(total=len(todo), desc=f"{dataset}: preparing", unit="clip", disable=not progress)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)           # one clip is small: intra-op threads only add contention
    try:
        for row, status, payload in _results(process, [(r, scan.clips[r]) for r in todo], config, workers):
            if status == "ok":
                frames, audio, info = payload
                writer.put(row, frames, audio, {**info, "step": "prepare"})
                processed += 1
            else:
                writer.skip(row, payload)
                tqdm.write(f"  skipped {scan.clips[row].clip}: {payload}")
            bar.update(1)
            if writer.n_pending >= flush_every or time.monotonic() - last_flush > 10:
                writer.flush()
                last_flush = time.monotonic()
    finally:
        torch.set_num_threads(threads)
        writer.flush()
        bar.close()
    return _finish(writer, scan, dataset=dataset, config=config, class_names=class_names,
                   make_splits=make_splits, processed=processed, reused=reused,
                   shapes=(frames_shape, audio_shape), log=log)


def _newly_usable(root: Path, scan: ScanResult) -> bool:
    """True when a clip the cache skipped at verify (e.g. an LFS pointer) is now usable."""
    with open(root / "skipped.csv", newline="") as f:
        rejected = {r["clip"] for r in csv.DictReader(f) if r["step"] == "verify"}
    return any(c.problem is None and c.clip in rejected for c in scan.clips)


def _checked_splits(dataset: str, ok_clips: list[Clip], make_splits: Callable) -> dict:
    splits = make_splits(ok_clips)
    empty = [f"fold {f} {part}" for f, parts in splits["folds"].items() for part, ids in parts.items() if not ids]
    if empty:
        raise UnusableError(f"{dataset}: empty split(s) after preparation: {', '.join(empty)}")
    return splits


def _refresh_splits(root: Path, scan: ScanResult, make_splits: Callable, *, log: Callable) -> int:
    """Splits are cheap: recompute them on every run, so a new split option needs no re-decoding."""
    meta = json.loads((root / "meta.json").read_text())
    with open(root / "index.csv", newline="") as f:
        ok = {r["clip"] for r in csv.DictReader(f)}
    splits = _checked_splits(meta["dataset"], [c for c in scan.clips if c.clip in ok], make_splits)
    if json.loads((root / "splits.json").read_text()) != json.loads(json.dumps(splits)):
        atomic_write_json(root / "splits.json", splits)
        meta["split_sizes"] = {f: {p: len(v) for p, v in parts.items()} for f, parts in splits["folds"].items()}
        atomic_write_json(root / "meta.json", meta)
        log(f"{meta['dataset']}: splits rewritten ({splits['rule']})")
    return len(ok)


def _finish(writer: CacheWriter, scan: ScanResult, *, dataset, config, class_names, make_splits,
            processed, reused, shapes, log) -> PrepareResult:
    ok_rows = [int(r) for r in np.flatnonzero(writer.status == DONE)]
    ok_clips = [scan.clips[r] for r in ok_rows]
    skipped = list(scan.excluded) + [
        {"clip": c.clip, "step": writer.rows[c.clip].get("step", "prepare"), "reason": writer.rows[c.clip]["reason"]}
        for r, c in enumerate(scan.clips) if writer.status[r] == SKIPPED]
    if not ok_clips:
        raise UnusableError(f"{dataset}: no usable clip ({len(skipped)} skipped); see the reasons above")
    splits = _checked_splits(dataset, ok_clips, make_splits)
    index = [{"row": r, "clip": c.clip, "label": c.label, "label_name": c.label_name, "group": c.group,
              "n_one_fps": writer.rows[c.clip].get("n_one_fps", 0)} for r, c in zip(ok_rows, ok_clips)]
    meta = {"dataset": dataset, "config": config, "class_names": class_names,
            "n_rows": len(scan.clips), "n_clips": len(ok_clips), "n_skipped": len(skipped),
            "frames_shape": list(shapes[0]), "audio_shape": list(shapes[1]),
            "counts": scan.counts, "notes": scan.notes,
            "split_sizes": {f: {p: len(v) for p, v in parts.items()} for f, parts in splits["folds"].items()}}
    writer.finalize(index=index, splits=splits, skipped=skipped, meta=meta)
    log(f"{dataset}: cache complete: {len(ok_clips)} clips, {len(skipped)} skipped "
        f"({processed} processed now, {reused} reused) -> {writer.root}")
    return PrepareResult(processed, reused, skipped, len(ok_clips))
