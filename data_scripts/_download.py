"""Download helpers for the ``download`` steps: resumable HTTP, Git-LFS pointers, archives.

Everything here runs only when a user asks for ``download``; offline, it fails with a message that
says which address could not be reached and what to do instead.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from data_scripts.media import lfs_pointer

CHUNK = 1 << 20


class DownloadError(Exception):
    """A download that could not be done; the message names the address and the fallback."""


def _context(insecure: bool):
    if not insecure:
        return None
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def fetch(url: str, dest: Path, *, insecure: bool = False, progress: bool = True, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed with an HTTP Range request)."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "mmbal-data-scripts"})
    if have and not url.startswith("file:"):
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout, context=_context(insecure))
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"cannot download {url}: {getattr(err, 'reason', err)} "
                            "(offline? behind a proxy? the server down?)") from None
    with resp:
        if "text/html" in resp.headers.get("Content-Type", "") and not url.startswith("file:"):
            raise DownloadError(f"{url} answered with a web page, not the file (a login or a quota page?); "
                                f"download it in a browser and pass the file with --archive")
        mode = "ab" if have and getattr(resp, "status", 200) == 206 else "wb"
        total = int(resp.headers.get("Content-Length") or 0) + (have if mode == "ab" else 0)
        with open(part, mode) as out, tqdm(total=total or None, initial=have if mode == "ab" else 0, unit="B",
                                           unit_scale=True, desc=dest.name, disable=not progress) as bar:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    os.replace(part, dest)
    return dest


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: Path, expected: str | None, *, pin: str) -> Path:
    """Check a downloaded or reused file against its pinned sha256; ``pin`` names the constant holding it.

    ``expected=None`` means no checksum is published: the digest is printed for the user to compare.
    """
    digest = sha256(path)
    if expected is None:
        print(f"note: no sha256 is published for {path.name}; this copy has sha256 {digest}. Compare it with "
              f"another copy (a second download, a colleague's); to pin it, set {pin} = \"{digest}\"")
    elif digest != expected:
        raise DownloadError(f"{path} has sha256 {digest}, not the pinned {expected} ({pin}): a damaged or "
                            "incomplete download, a quota page, or a changed upstream file; delete it and "
                            "download again")
    return path


def fetch_pinned(url: str, dest: Path, expected: str | None, *, pin: str, **options) -> Path:
    """``fetch`` + ``check_sha256``, also when ``dest`` already exists; a fresh download that fails is deleted."""
    reused = Path(dest).exists()
    path = fetch(url, dest, **options)
    try:
        return check_sha256(path, expected, pin=pin)
    except DownloadError:
        if not reused:
            path.unlink()
        raise


def has_pointers(paths) -> bool:
    """True when any of ``paths`` is a Git-LFS pointer instead of media."""
    return any(lfs_pointer(p) is not None for p in paths)


def resolve_pointer(path: Path, rel: str, bases: list[str], *, insecure: bool = False) -> str | None:
    """Replace a Git-LFS pointer by its media, trying each base URL; None on success, else the error."""
    info = lfs_pointer(path)
    if info is None:
        return None
    errors = []
    for base in bases:
        tmp = path.with_name(path.name + ".media")
        tmp.unlink(missing_ok=True)
        try:
            fetch(base.rstrip("/") + "/" + rel, tmp, insecure=insecure, progress=False)
        except DownloadError as err:
            errors.append(str(err))
            continue
        if info["oid"] and sha256(tmp) != info["oid"]:
            errors.append(f"{base}: content does not match the pointer's sha256 (quota page or wrong file?)")
            tmp.unlink()
            continue
        os.replace(tmp, path)
        return None
    return f"{path}: " + " | ".join(errors)


def resolve_pointers(files: list[tuple[Path, str]], bases: list[str], *, workers: int = 8,
                     insecure: bool = False, progress: bool = True) -> list[str]:
    """Resolve many pointers in parallel; returns the error of every file that stayed a pointer."""
    todo = [(p, rel) for p, rel in files if lfs_pointer(p) is not None]
    errors = []
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(todo), desc="fetching LFS media", unit="file",
                                                   disable=not progress) as bar:
        for err in pool.map(lambda item: resolve_pointer(item[0], item[1], bases, insecure=insecure), todo):
            if err:
                errors.append(err)
            bar.update(1)
    return errors


def extract(archive: Path, dest: Path) -> None:
    """Unpack a .zip (Python) or .rar (first of unrar / 7z / bsdtar / unar found on PATH)."""
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix.lower() == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
        return
    tools = {"unrar": ["unrar", "x", "-o+", str(archive), str(dest) + "/"],
             "7z": ["7z", "x", "-y", f"-o{dest}", str(archive)],
             "bsdtar": ["bsdtar", "-xf", str(archive), "-C", str(dest)],
             "unar": ["unar", "-f", "-o", str(dest), str(archive)]}
    for tool, cmd in tools.items():
        if shutil.which(tool):
            if subprocess.run(cmd).returncode != 0:
                raise DownloadError(f"{tool} failed to unpack {archive}")
            return
    raise DownloadError(f"cannot unpack {archive}: none of unrar, 7z, bsdtar, unar is installed "
                        f"(e.g. apt-get install unar); unpack it into {dest} yourself and rerun verify")


def lift_single_folder(dest: Path, marker: str) -> None:
    """If ``dest`` holds one folder that contains ``marker``, move that folder's content up."""
    inner = [p for p in dest.iterdir() if p.is_dir() and (p / marker).exists()]
    if not (dest / marker).exists() and len(inner) == 1:
        for child in inner[0].iterdir():
            os.replace(child, dest / child.name)
        inner[0].rmdir()
