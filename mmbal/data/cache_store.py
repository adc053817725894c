"""The on-disk cache that ``data_scripts`` write and the real-dataset loaders memory-map.

Layout of a cache folder (one per dataset)::

    frames.npy    (N, T, H, W, 3) uint8    the 1-fps frames of every clip (MLB protocol)
    audio.npy     (N, F, T_a)     float16  the log-spectrogram of every clip
    index.csv     one row per usable clip: row, clip, label, label_name, group, n_one_fps
    splits.json   {"folds": {fold: {"train": [clip...], "val": [...], "test": [...]}}, "rule": ...}
    skipped.csv   every clip left out, with the step and the reason
    meta.json     written last: its presence means the cache is complete

While ``prepare`` runs, everything lives in ``.work/``; rows are marked done only after their bytes
are flushed, and the final files are moved into place with ``os.replace`` (atomic on one disk).
``.work/`` keeps a few kB of bookkeeping afterwards (which clip is done or skipped, and why).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE_VERSION = 1
TODO, DONE, SKIPPED = 0, 1, 2
INDEX_COLUMNS = ["row", "clip", "label", "label_name", "group", "n_one_fps"]


class CacheError(FileNotFoundError):
    """A cache folder that is missing, incomplete or of the wrong dataset; the message says what to run."""


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


def csv_text(columns: list[str], rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def fingerprint(obj) -> str:
    """A short hash of a JSON-able description (config, clip list, shapes)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()[:16]


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
        atomic_write_bytes(self.root / "index.csv", csv_text(INDEX_COLUMNS, index).encode("utf-8"))
        atomic_write_json(self.root / "splits.json", splits)
        atomic_write_bytes(self.root / "skipped.csv",
                           csv_text(["clip", "step", "reason"], skipped).encode("utf-8"))
        atomic_write_json(self.root / "meta.json", {**meta, "fingerprint": self.key, "version": CACHE_VERSION})


def cache_key(*, ids: list[str], frames_shape, audio_shape, description: dict) -> str:
    """The fingerprint a cache built from this clip list, these shapes and this config carries."""
    return fingerprint({"v": CACHE_VERSION, "ids": list(ids), "frames": list(frames_shape),
                        "audio": list(audio_shape), "desc": description})


def complete_cache_key(root: str | Path) -> str | None:
    """The fingerprint of the complete cache at ``root``, or None when there is none."""
    meta_path = Path(root) / "meta.json"
    return json.loads(meta_path.read_text()).get("fingerprint") if meta_path.exists() else None


@dataclass
class Cache:
    """A complete cache folder, opened read-only and memory-mapped."""

    root: Path
    meta: dict
    index: list[dict]
    splits: dict
    frames: np.ndarray   # (N, T, H, W, 3) uint8 memmap
    audio: np.ndarray    # (N, F, T_a) float16 memmap


def open_cache(root: str | Path | None, *, dataset: str) -> Cache:
    """Open the cache of ``dataset`` at ``root``; a missing or half-written one raises CacheError."""
    how = f"python -m data_scripts.{dataset} all --raw <downloaded {dataset} folder> --cache {root or '<cache folder>'}"
    if root is None:
        raise CacheError(f"dataset {dataset!r} reads a prepared cache: pass root=<cache folder> "
                         f"(CLI: --data-root). Build one with: {how}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CacheError(f"no {dataset} cache at {root} (folder does not exist). Build it with: {how}")
    meta_path = root / "meta.json"
    if not meta_path.exists():
        state = ("incomplete (a prepare run was interrupted or is running)" if (root / ".work").exists()
                 else "not a cache (no meta.json)")
        raise CacheError(f"{root} is {state}. Run: {how}")
    meta = json.loads(meta_path.read_text())
    if meta.get("dataset") != dataset:
        raise CacheError(f"{root} holds a {meta.get('dataset')!r} cache, not {dataset!r}")
    if meta.get("version") != CACHE_VERSION:
        raise CacheError(f"{root} was written by cache format {meta.get('version')}, this mmbal reads "
                         f"{CACHE_VERSION}; rebuild it with: {how} --force")
    for name in ("frames.npy", "audio.npy", "index.csv", "splits.json"):
        if not (root / name).exists():
            raise CacheError(f"{root / name} is missing; rebuild the cache with: {how}")
    with open(root / "index.csv", newline="") as f:
        index = [dict(r, row=int(r["row"]), label=int(r["label"]), n_one_fps=int(r["n_one_fps"]))
                 for r in csv.DictReader(f)]
    splits = json.loads((root / "splits.json").read_text())
    frames = np.load(root / "frames.npy", mmap_mode="r")
    audio = np.load(root / "audio.npy", mmap_mode="r")
    return Cache(root, meta, index, splits, frames, audio)
