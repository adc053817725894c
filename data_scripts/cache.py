"""Writing a cache (the format ``mmbal.data.cached`` reads): resumable, parallel, every skip named.

A dataset module supplies ``scan`` (what the raw folder holds, with a problem per bad clip),
``process`` (one clip -> frames, spectrogram, info) and a splits function; ``run_prepare`` does the rest.
While it runs, everything lives in ``<cache>/.work/``; rows are marked done only after their bytes are
flushed, and the final files are moved into place with ``os.replace`` (atomic on one disk), ``meta.json``
last. ``.work/`` keeps a few kB of bookkeeping afterwards (which clip is done or skipped, and why).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from data_scripts.media import MediaError
from mmbal.data.cached import CACHE_VERSION

TODO, DONE, SKIPPED = 0, 1, 2
INDEX_COLUMNS = ["row", "clip", "label", "label_name", "group", "n_one_fps"]


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


# ---------------------------------------------------------------- atomic files

def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to ``<path>.tmp`` then rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def atomic_write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, out.getvalue().encode("utf-8"))


def cache_key(*, ids: list[str], frames_shape, audio_shape, description: dict) -> str:
    """The fingerprint (short sha256) a cache built from this clip list, these shapes and this config carries."""
    desc = {"v": CACHE_VERSION, "ids": list(ids), "frames": list(frames_shape), "audio": list(audio_shape),
            "desc": description}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def complete_cache_key(root: str | Path) -> str | None:
    """The fingerprint of the complete cache at ``root``, or None when there is none."""
    meta_path = Path(root) / "meta.json"
    return json.loads(meta_path.read_text()).get("fingerprint") if meta_path.exists() else None


# ---------------------------------------------------------------- the writer

class CacheWriter:
    """Fills the (N, ...) arrays row by row; an interrupted run resumes where it stopped.

    ``ids`` fixes the row order. A ``.work`` folder whose fingerprint differs (other config or clip
    list) is discarded; ``force=True`` always starts over.
    """

    def __init__(self, root: str | Path, *, ids: list[str], frames_shape: tuple[int, ...],
                 audio_shape: tuple[int, ...], description: dict, force: bool = False):
        self.root = Path(root)
        self.work = self.root / ".work"
        self.ids = list(ids)
        self.key = cache_key(ids=self.ids, frames_shape=frames_shape, audio_shape=audio_shape,
                             description=description)
        n = len(self.ids)
        stamp = self.work / "fingerprint.txt"
        if force or not stamp.exists() or stamp.read_text().strip() != self.key:
            (self.root / "meta.json").unlink(missing_ok=True)            # an older cache is now stale
            shutil.rmtree(self.work, ignore_errors=True)
            self.work.mkdir(parents=True)
            open_memmap = np.lib.format.open_memmap
            open_memmap(self.work / "frames.npy", mode="w+", dtype=np.uint8, shape=(n, *frames_shape)).flush()
            open_memmap(self.work / "audio.npy", mode="w+", dtype=np.float16, shape=(n, *audio_shape)).flush()
            np.save(self.work / "status.npy", np.zeros(n, dtype=np.int8))
            atomic_write_json(self.work / "rows.json", {})
            atomic_write_bytes(stamp, self.key.encode())
            self.resumed = False
        else:
            self.resumed = True
            if not (self.work / "frames.npy").exists():                   # reopen a complete cache
                (self.root / "meta.json").unlink(missing_ok=True)        # incomplete while we edit it
                for name in ("frames.npy", "audio.npy"):
                    os.replace(self.root / name, self.work / name)
        self.frames = np.load(self.work / "frames.npy", mmap_mode="r+")
        self.audio = np.load(self.work / "audio.npy", mmap_mode="r+")
        self.status = np.load(self.work / "status.npy")
        self.rows: dict[str, dict] = json.loads((self.work / "rows.json").read_text())
        self._pending: list[tuple[int, int, dict]] = []

    def todo(self, *, retry_skipped: bool = False) -> list[int]:
        """Row numbers still to process."""
        wanted = (self.status == TODO) | (retry_skipped & (self.status == SKIPPED))
        return [int(i) for i in np.flatnonzero(wanted)]

    def put(self, row: int, frames: np.ndarray, audio: np.ndarray, info: dict) -> None:
        """Store one processed clip (not yet marked done: see ``flush``)."""
        self.frames[row] = frames
        self.audio[row] = audio.astype(np.float16)
        self._pending.append((row, DONE, info))

    def skip(self, row: int, reason: str, *, step: str = "prepare") -> None:
        """Record that a clip cannot be used, and why (kept across resumed runs)."""
        self._pending.append((row, SKIPPED, {"reason": reason, "step": step}))

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    def flush(self, *, always: bool = False) -> None:
        """Flush array bytes to disk, then mark the pending rows done (in that order)."""
        if not self._pending and not always:
            return
        self.frames.flush()
        self.audio.flush()
        for row, state, info in self._pending:
            self.status[row] = state
            self.rows[self.ids[row]] = info
        buf = io.BytesIO()
        np.save(buf, self.status)
        atomic_write_bytes(self.work / "status.npy", buf.getvalue())
        atomic_write_json(self.work / "rows.json", self.rows)
        self._pending.clear()

    def finalize(self, *, index: list[dict], splits: dict, skipped: list[dict], meta: dict) -> None:
        """Move the arrays into place and write index, splits, skipped list and (last) meta.json.

        The small bookkeeping files stay in ``.work``, so a later run can retry skipped clips.
        """
        self.flush(always=True)
        del self.frames, self.audio                                   # close the memmaps
        for name in ("frames.npy", "audio.npy"):
            os.replace(self.work / name, self.root / name)
        atomic_write_csv(self.root / "index.csv", INDEX_COLUMNS, index)
        atomic_write_json(self.root / "splits.json", splits)
        atomic_write_csv(self.root / "skipped.csv", ["clip", "step", "reason"], skipped)
        atomic_write_json(self.root / "meta.json", {**meta, "fingerprint": self.key, "version": CACHE_VERSION})


# ---------------------------------------------------------------- run_prepare

def _init_worker() -> None:
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
    todo = [r for r in writer.todo(retry_skipped=retry_skipped) if scan.clips[r].problem is None]
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


def _split_sizes(splits: dict) -> dict:
    return {f: {p: len(v) for p, v in parts.items()} for f, parts in splits["folds"].items()}


def _refresh_splits(root: Path, scan: ScanResult, make_splits: Callable, *, log: Callable) -> int:
    """Splits are cheap: recompute them on every run, so a new split option needs no re-decoding."""
    meta = json.loads((root / "meta.json").read_text())
    with open(root / "index.csv", newline="") as f:
        ok = {r["clip"] for r in csv.DictReader(f)}
    splits = _checked_splits(meta["dataset"], [c for c in scan.clips if c.clip in ok], make_splits)
    if json.loads((root / "splits.json").read_text()) != json.loads(json.dumps(splits)):
        atomic_write_json(root / "splits.json", splits)
        atomic_write_json(root / "meta.json", {**meta, "split_sizes": _split_sizes(splits)})
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
            "counts": scan.counts, "notes": scan.notes, "split_sizes": _split_sizes(splits)}
    writer.finalize(index=index, splits=splits, skipped=skipped, meta=meta)
    log(f"{dataset}: cache complete: {len(ok_clips)} clips, {len(skipped)} skipped "
        f"({processed} processed now, {reused} reused) -> {writer.root}")
    return PrepareResult(processed, reused, skipped, len(ok_clips))
