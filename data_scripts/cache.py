"""Writing a cache (the format ``mmbal.data.cached`` reads): resumable, parallel, every skip named.

A dataset module supplies ``scan`` (what the raw folder holds, with a problem per bad clip),
``process`` (one clip -> frames, spectrogram, info) and a splits function; ``run_prepare`` does the rest.
While it runs, everything lives in ``<cache>/.work/``; rows are marked done only after their bytes are
flushed, and the final files are moved into place with ``os.replace`` (atomic on one disk), ``meta.json``
last. ``.work/`` keeps a few kB of bookkeeping afterwards (which clip is done or skipped, and why, and the
size and mtime of the files a clip failed on, so a repaired file is retried). A damaged complete cache
is repaired by the next run: bad arrays are re-decoded; otherwise the small files are rewritten from
``.work`` without decoding. Decoding workers ignore Ctrl-C and end with the run, however it ends.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from data_scripts.media import MediaError
from mmbal.data.cached import ARRAYS, CACHE_VERSION, SMALL_FILES, CacheError, open_cache

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
    try:
        return json.loads((Path(root) / "meta.json").read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def file_records(root: Path) -> dict:
    """What meta.json records: shape, dtype and bytes of each array; bytes and sha256 of each small file."""
    out = {}
    for name in ARRAYS:
        a = np.load(root / name, mmap_mode="r")
        out[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "bytes": (root / name).stat().st_size}
    for name in SMALL_FILES:
        data = (root / name).read_bytes()
        out[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return out


def _array_problem(path: Path, shape: tuple, dtype) -> str | None:
    """Why the .npy at ``path`` is not a complete (shape) array of ``dtype``, or None."""
    try:
        a = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        return f"{path.name}: {err}"
    if a.shape != shape or a.dtype != dtype or path.stat().st_size != a.offset + a.nbytes:
        return f"{path.name}: {a.dtype} {a.shape} in {path.stat().st_size:,} bytes, expected {np.dtype(dtype)} {shape}"
    return None


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
        shapes = {"frames.npy": ((n, *frames_shape), np.uint8), "audio.npy": ((n, *audio_shape), np.float16)}
        stamp = self.work / "fingerprint.txt"
        self.restarted = ("--force" if force else "no earlier run in .work" if not stamp.exists() else
                          "another configuration or clip list" if stamp.read_text().strip() != self.key else None)
        if not self.restarted and not (self.work / "frames.npy").exists():   # reopen a complete cache
            (self.root / "meta.json").unlink(missing_ok=True)                 # incomplete while we edit it
            for name in shapes:
                if (self.root / name).exists():
                    os.replace(self.root / name, self.work / name)
        if not self.restarted:                                               # damaged arrays: decode again
            self.restarted = next(filter(None, (_array_problem(self.work / k, *v) for k, v in shapes.items())), None)
        if self.restarted:
            (self.root / "meta.json").unlink(missing_ok=True)            # an older cache is now stale
            shutil.rmtree(self.work, ignore_errors=True)
            self.work.mkdir(parents=True)
            for name, (shape, dtype) in shapes.items():
                np.lib.format.open_memmap(self.work / name, mode="w+", dtype=dtype, shape=shape).flush()
            np.save(self.work / "status.npy", np.zeros(n, dtype=np.int8))
            atomic_write_json(self.work / "rows.json", {})
            atomic_write_bytes(stamp, self.key.encode())
        self.resumed = not self.restarted
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

    def skip(self, row: int, reason: str, *, step: str = "prepare", files: dict | None = None) -> None:
        """Record that a clip cannot be used, and why (kept across resumed runs), with its files' stamps."""
        self._pending.append((row, SKIPPED, {"reason": reason, "step": step, **({"files": files} if files else {})}))

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
        if meta.get("rebuild"):
            atomic_write_bytes(self.work / "rebuild.txt", meta["rebuild"].encode())
        atomic_write_json(self.root / "meta.json", {**meta, "fingerprint": self.key, "version": CACHE_VERSION,
                                                    "files": file_records(self.root)})


# ---------------------------------------------------------------- run_prepare

def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C reaches the whole process group: the parent handles it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)    # the parent's handler is inherited; Pool.terminate sends SIGTERM
    torch.set_num_threads(1)


def _work(process: Callable, config: dict, job: tuple[int, Clip]):
    row, clip = job
    try:
        return row, "ok", process(clip, config)
    except MediaError as err:
        return row, "skip", str(err)
    except Exception as err:  # noqa: BLE001 - a bug on one clip must not cost hours of work
        return row, "skip", f"unexpected error while processing {clip.clip}: {type(err).__name__}: {err}"


def _results(process, jobs, config, workers):
    """Yield (row, status, payload) for every job; in-process when workers == 0.

    Leaving the ``with`` block, normally or by an exception (Ctrl-C, SIGTERM), terminates the workers.
    """
    work = partial(_work, process, config)
    if workers <= 0:
        yield from map(work, jobs)
        return
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(work, jobs)


def _stamp(clip: Clip) -> dict:
    """Size and mtime of each input file of a clip: a change means the file was replaced or repaired."""
    return {k: [os.stat(v).st_size, os.stat(v).st_mtime_ns] for k, v in clip.inputs.items()
            if isinstance(v, str) and os.path.isfile(v)}


def _retry(info: dict, clip: Clip) -> bool:
    """A skipped clip to try again: its verify problem is gone, or a file it failed on has changed."""
    return "reason" in info and clip.problem is None and (
        info.get("step") == "verify" or ("files" in info and info["files"] != _stamp(clip)))


def _damage(root: Path, dataset: str) -> CacheError | None:
    """The first damaged file of a complete cache at ``root`` (None when fine, absent or incomplete)."""
    if not (root / "meta.json").exists():
        return None
    try:
        open_cache(root, dataset=dataset)
    except CacheError as err:
        return err if err.file else None      # another dataset's or format's cache: rebuilt as before
    return None


def run_prepare(cache_root: str | Path, *, dataset: str, scan: ScanResult, process: Callable,
                config: dict, frames_shape: tuple, audio_shape: tuple, make_splits: Callable,
                class_names: list[str], workers: int = 0, force: bool = False,
                retry_skipped: bool = False, progress: bool = True, log: Callable = print,
                flush_every: int = 32, rebuild: str | None = None) -> PrepareResult:
    """Decode every usable clip into the cache at ``cache_root``; resume, repair, skip and report as needed.

    ``rebuild`` is the command that rebuilds this cache (recorded in meta.json, named by open_cache's errors).
    """
    root = Path(cache_root)
    root.mkdir(parents=True, exist_ok=True)
    ids = [c.clip for c in scan.clips]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{dataset}: clip ids are not unique")
    desc = {"dataset": dataset, "config": config}
    key = cache_key(ids=ids, frames_shape=frames_shape, audio_shape=audio_shape, description=desc)
    damage = _damage(root, dataset)
    kept = root / ".work" / "rows.json"
    rows = json.loads(kept.read_text()) if kept.exists() else {}
    if not (force or retry_skipped or damage) and complete_cache_key(root) == key and \
            not any(_retry(rows.get(c.clip, {}), c) for c in scan.clips):
        n_ok = _refresh_splits(root, scan, make_splits, log=log)
        log(f"{dataset}: cache at {root} is complete and up to date; nothing to decode")
        _unretried(rows, dataset, log)
        return PrepareResult(0, n_ok, [], n_ok, up_to_date=True)
    if damage is not None:
        log(f"{dataset}: {root / damage.file} is damaged ({damage.reason}); repairing it")
    writer = CacheWriter(root, ids=ids, frames_shape=frames_shape, audio_shape=audio_shape,
                         description=desc, force=force)
    if damage is not None:
        log(f"{dataset}: re-decoding every clip ({writer.restarted}); this run's verify scan is reused"
            if writer.restarted else f"{dataset}: the arrays are intact: rewriting index.csv, splits.json, "
                                     "skipped.csv and meta.json from .work, without decoding")
    elif writer.resumed:
        log(f"{dataset}: resuming: {int((writer.status == DONE).sum())} of {len(ids)} clips already in "
            f"{root / '.work'}")
    # verify verdicts are re-evaluated on every run: a fixed file is picked up, a broken one is skipped
    for row, clip in enumerate(scan.clips):
        if clip.problem is not None and writer.status[row] == TODO:     # clips already cached stay
            writer.status[row] = SKIPPED
            writer.rows[clip.clip] = {"reason": clip.problem, "step": "verify"}
        elif writer.status[row] == SKIPPED and _retry(writer.rows.get(clip.clip, {}), clip):
            writer.status[row] = TODO
            writer.rows.pop(clip.clip)
    todo = [r for r in writer.todo(retry_skipped=retry_skipped) if scan.clips[r].problem is None]
    reused = int((writer.status == DONE).sum())
    log(f"{dataset}: {len(todo)} clips to process, {reused} reused, workers={workers}")
    if not retry_skipped:
        _unretried(writer.rows, dataset, log)
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
                writer.skip(row, payload, files=_stamp(scan.clips[row]))
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
                   shapes=(frames_shape, audio_shape), log=log, rebuild=rebuild)


def _unretried(rows: dict, dataset: str, log: Callable) -> None:
    """Say how many clips failed to decode earlier and are not retried (their files have not changed)."""
    n = sum(info.get("step") == "prepare" and "reason" in info for info in rows.values())
    if n:
        log(f"{dataset}: {n} clips that failed to decode in an earlier run are not retried (their files are "
            "unchanged); pass --retry-skipped to retry them")


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
        atomic_write_json(root / "meta.json", {**meta, "split_sizes": _split_sizes(splits),
                                               "files": file_records(root)})
        log(f"{meta['dataset']}: splits rewritten ({splits['rule']})")
    return len(ok)


def _finish(writer: CacheWriter, scan: ScanResult, *, dataset, config, class_names, make_splits,
            processed, reused, shapes, log, rebuild) -> PrepareResult:
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
            "counts": scan.counts, "notes": scan.notes, "split_sizes": _split_sizes(splits),
            **({"rebuild": rebuild} if rebuild else {})}
    writer.finalize(index=index, splits=splits, skipped=skipped, meta=meta)
    log(f"{dataset}: cache complete: {len(ok_clips)} clips, {len(skipped)} skipped "
        f"({processed} processed now, {reused} reused) -> {writer.root}")
    return PrepareResult(processed, reused, skipped, len(ok_clips))
