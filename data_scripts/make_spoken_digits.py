"""Render the Digits-AV audio bank: "zero".."nine" spoken by espeak-ng in 7 accents x 12 voices.

Run ``python -m data_scripts.make_spoken_digits [--out PATH] [--force]``; the committed bank is
``mmbal/data/assets/spoken_digits.npz`` (see the README beside it).
"""
from __future__ import annotations

import argparse
import itertools
import os
import shutil
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-029", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp",
           "en-us")
# A "voice" (the held-out unit, like a CREMA-D actor) is an espeak-ng voice variant: it sets
# pitch, formants and the synthesiser, and it speaks every digit in every accent.
VARIANTS = ("croak", "f1", "f2", "f4", "klatt", "klatt3", "klatt4", "m1", "m3", "m5", "m7",
            "whisper")
PITCH = 50        # espeak-ng -p (0-99), its default
SPEED = 175       # espeak-ng -s (words per minute), its default
SAMPLE_RATE = 8000
TRIM_DB = 40.0    # frames quieter than peak - 40 dB at either end are trimmed
FRAME = 80        # 10 ms at 8 kHz
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "mmbal" / "data" / "assets" / "spoken_digits.npz"


def ensure_espeak() -> str:
    """Return the espeak-ng executable, installing the Debian package when it is missing."""
    exe = shutil.which("espeak-ng")
    if exe:
        return exe
    if os.name != "posix" or os.geteuid() != 0:
        sys.exit("espeak-ng not found; install it (e.g. `sudo apt-get install -y espeak-ng`) and rerun")
    print("espeak-ng not found: running `apt-get install -y espeak-ng`", flush=True)
    if subprocess.run(["apt-get", "install", "-y", "espeak-ng"]).returncode != 0:
        print("install failed: running `apt-get update`, then installing again", flush=True)
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", "espeak-ng"], check=True)
    exe = shutil.which("espeak-ng")
    if not exe:
        sys.exit("espeak-ng is still not on PATH after apt-get install")
    return exe


def espeak_version(exe: str) -> str:
    """espeak-ng's own version line, plus the Debian package version when dpkg knows it."""
    line = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    line = line.split("  Data at:")[0].strip()
    deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "espeak-ng"],
                         capture_output=True, text=True) if shutil.which("dpkg-query") else None
    return f"{line} (Debian package {deb.stdout.strip()})" if deb and deb.returncode == 0 else line


def available_variants(exe: str) -> set[str]:
    """Variant file names that this espeak-ng knows (it silently ignores unknown ones)."""
    out = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True).stdout
    return {line.split("!v/")[1].strip() for line in out.splitlines() if "!v/" in line}


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit mono PCM from espeak's streamed WAV (its size fields are bogus) -> (float32 [-1, 1], rate)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not return a WAV stream")
    channels, rate = struct.unpack("<HI", data[22:28])
    bits = struct.unpack("<H", data[34:36])[0]
    start = data.index(b"data", 12) + 8
    if channels != 1 or bits != 16:
        raise ValueError(f"expected 16-bit mono WAV, got {channels} channels, {bits} bits")
    pcm = np.frombuffer(data[start:start + (len(data) - start) // 2 * 2], dtype="<i2")
    return pcm.astype(np.float32) / 32768.0, rate


def render(exe: str, word: str, accent: str, variant: str) -> np.ndarray:
    """One clip at SAMPLE_RATE, float32 in [-1, 1], silence trimmed at both ends."""
    cmd = [exe, "-v", f"{accent}+{variant}", "-p", str(PITCH), "-s", str(SPEED), "--stdout", word]
    from scipy.signal import resample_poly  # imported here: slow, and only rendering needs it

    wav, rate = parse_wav(subprocess.run(cmd, capture_output=True, check=True).stdout)
    ratio = Fraction(SAMPLE_RATE, rate)
    wav = resample_poly(wav, ratio.numerator, ratio.denominator).astype(np.float32)
    return trim(wav)


def trim(wav: np.ndarray) -> np.ndarray:
    """Cut leading/trailing 10 ms frames more than TRIM_DB below the loudest frame (one frame kept)."""
    n = len(wav) // FRAME
    rms = np.sqrt((wav[: n * FRAME].reshape(n, FRAME) ** 2).mean(axis=1))  # (n,)
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-TRIM_DB / 20))
    first, last = max(loud[0] - 1, 0), min(loud[-1] + 2, n)
    return wav[first * FRAME: last * FRAME]


def mulaw_encode(wav: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> 8-bit mu-law codes (mu = 255); inverse in mmbal.data.digits_av.mulaw_decode."""
    x = np.clip(wav, -1.0, 1.0)
    y = np.sign(x) * np.log1p(255.0 * np.abs(x)) / np.log1p(255.0)
    return np.round((y + 1.0) / 2.0 * 255.0).astype(np.uint8)


def build_bank(exe: str) -> dict[str, np.ndarray]:
    """Render every (accent, variant, digit) in sorted order and pack the clips into arrays."""
    known = available_variants(exe)
    missing = sorted(set(VARIANTS) - known)
    if missing:
        sys.exit(f"this espeak-ng lacks the voice variants {missing}")
    jobs = list(itertools.product(sorted(ACCENTS), sorted(VARIANTS), range(len(WORDS))))
    clips, labels, accents, variants = [], [], [], []
    for accent, variant, digit in tqdm(jobs, desc="espeak-ng", unit="clip"):
        clips.append(mulaw_encode(render(exe, WORDS[digit], accent, variant)))
        labels.append(digit)
        accents.append(accent)
        variants.append(variant)
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return {
        "samples": np.concatenate(clips),            # (sum of lengths,) uint8 mu-law codes
        "offsets": offsets, "lengths": lengths,      # (N,) each
        "label": np.array(labels, dtype=np.int64),   # (N,) digit 0-9
        "accent": np.array(accents), "variant": np.array(variants),
        "voice": np.array(variants),                 # the held-out unit: the voice variant
        "sample_rate": np.array(SAMPLE_RATE), "encoding": np.array("mulaw8"),
        "pitch": np.array(PITCH), "speed_wpm": np.array(SPEED),
        "words": np.array(WORDS), "espeak_version": np.array(espeak_version(exe)),
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output .npz (default {DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true", help="re-render even when the output exists")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.force:
        print(f"{args.out} exists; nothing to do (use --force to re-render)")
        return args.out
    exe = ensure_espeak()
    bank = build_bank(exe)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(tmp, **bank)
    tmp.replace(args.out)
    n, secs = len(bank["label"]), bank["lengths"].sum() / SAMPLE_RATE
    print(f"wrote {args.out}: {n} clips, {secs:.0f} s of audio, {args.out.stat().st_size / 1e6:.2f} MB, "
          f"{bank['espeak_version']}")
    return args.out


if __name__ == "__main__":
    main()
