"""Decoding real-dataset media (PyAV, soundfile) and MLB's audio recipes (paper §4.2–4.4) in plain torch.

Frame selection follows MLB's OpenCV loop (keep frame i when ``i % int(fps) == 0``, i.e. the first
frame of every second), but the padding MLB draws with an unseeded ``np.random`` is seeded per clip.
CREMA-D and UCF101 audio use librosa's ``stft`` (Hann, ``center=True``) and ``log(|X| + 1e-7)``;
AVE uses ``scipy.signal.spectrogram`` (Tukey(0.25), constant detrend, one-sided PSD) and
``log(S + 1e-7)``. Both are rebuilt on ``torch.stft`` / ``torch.fft`` and checked against scipy in
the tests. Resampling uses torchaudio's Kaiser-windowed sinc (librosa uses soxr).
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio

LFS_MAGIC = b"version https://git-lfs"
LOG_EPS = 1e-7
TRUNCATION_RATIO = 0.75      # a video decoding to fewer than 75 % of the frames its header declares is truncated

# CREMA-D: librosa.load(sr=22050), tile x3, cut to 3 s, stft(n_fft=512, hop=353) -> 257 x 188
CREMAD_AUDIO = {"sample_rate": 22050, "seconds": 3.0, "n_fft": 512, "hop": 353, "tile": True}
# AVE: 16 kHz, event segment tiled to 10 s, scipy spectrogram(nperseg=512, noverlap=353) -> 257 x 1004
AVE_AUDIO = {"sample_rate": 16000, "seconds": 10.0, "nperseg": 512, "noverlap": 353}
# UCF101: 16 kHz first channel, first 3 s (no tiling), stft(n_fft=512, hop=353) -> 257 x 136
UCF101_AUDIO = {"sample_rate": 16000, "seconds": 3.0, "n_fft": 512, "hop": 353, "tile": False}


class MediaError(Exception):
    """A media file that cannot be used; the message names the file and the reason."""


# ---------------------------------------------------------------- checks: Git-LFS pointers, truncation

def lfs_pointer(path: str | Path) -> dict | None:
    """The fields of a Git-LFS pointer file (``oid``, ``size``), or None for a real media file."""
    path = Path(path)
    if path.stat().st_size > 1024:
        return None
    head = path.read_bytes()
    if not head.startswith(LFS_MAGIC):
        return None
    fields = dict(line.split(" ", 1) for line in head.decode("utf-8", "replace").splitlines() if " " in line)
    return {"oid": fields.get("oid", "").removeprefix("sha256:"), "size": int(fields.get("size", "0") or 0)}


def check_not_pointer(path: str | Path) -> None:
    """Raise MediaError when ``path`` is a Git-LFS pointer instead of the media it points to."""
    info = lfs_pointer(path)
    if info is not None:
        raise MediaError(f"{path}: Git-LFS pointer file (points to {info['size']:,} bytes), not media; "
                         "fetch the media (git lfs pull, the release or the mirror) and rerun")


def _wav_data_bytes(path: Path) -> tuple[int, int] | None:
    """(declared, available) size of a RIFF/WAVE file's data chunk, or None if not parseable."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                start = f.tell()
                return size, path.stat().st_size - start
            f.seek(size + (size & 1), 1)


def _truncated_wav(path: Path) -> str | None:
    sizes = _wav_data_bytes(path)
    if sizes is not None and sizes[1] < sizes[0]:
        return f"{path}: truncated WAV (header declares {sizes[0]:,} bytes of audio, file holds {sizes[1]:,})"
    return None


def media_problem(path: str | Path, *, kind: str) -> str | None:
    """Cheap verify-step check of one file (``kind`` "wav" or "video"): None if fine, else the reason."""
    path = Path(path)
    try:
        if not path.is_file():
            return f"{path}: missing"
        if path.stat().st_size == 0:
            return f"{path}: empty file"
        check_not_pointer(path)
        if kind == "wav":
            if _wav_data_bytes(path) is None:
                return f"{path}: not a RIFF/WAVE file"
            if problem := _truncated_wav(path):
                return problem
            sf.info(str(path))
        else:
            return _truncated_video(path, probe(path))
    except MediaError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 - soundfile / av raise many types
        return f"{path}: unreadable ({type(err).__name__}: {err})"
    return None


# ---------------------------------------------------------------- decoding

def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A WAV file as float32 (C, N) in [-1, 1] and its sample rate; truncated files raise MediaError."""
    path = Path(path)
    check_not_pointer(path)
    if problem := _truncated_wav(path):
        raise MediaError(problem)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError
        raise MediaError(f"{path}: unreadable WAV ({err})") from None
    if data.shape[0] == 0:
        raise MediaError(f"{path}: WAV holds no samples")
    return np.ascontiguousarray(data.T), int(sr)


def _open(path: Path):
    check_not_pointer(path)
    try:
        return av.open(str(path))
    except Exception as err:  # av.error.InvalidDataError and friends
        raise MediaError(f"{path}: cannot open ({type(err).__name__}: {err})") from None


@dataclass
class VideoInfo:
    """What a header probe tells about a clip."""

    fps: float
    expected_frames: int | None
    has_audio: bool
    width: int
    height: int


def probe(path: str | Path) -> VideoInfo:
    """Open the container and read its stream headers (cheap; does not decode)."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        vs = container.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        if fps <= 0:
            raise MediaError(f"{path}: video stream has no frame rate")
        expected = vs.frames or None
        if expected is None and container.duration:
            expected = int(round(container.duration / 1e6 * fps))
        return VideoInfo(fps, expected, bool(container.streams.audio), vs.codec_context.width,
                         vs.codec_context.height)


def _truncated_video(path: Path, info: VideoInfo) -> str | None:
    """Count the video packets (demuxed, not decoded: cheap); far fewer than the header declares = truncated."""
    n = 0
    with _open(path) as container:
        try:
            for packet in container.demux(container.streams.video[0]):
                n += packet.size > 0
        except Exception:  # noqa: BLE001 - a cut-off stream may end in a demuxer error: count what came before
            pass
    if info.expected_frames and n < TRUNCATION_RATIO * info.expected_frames:
        return f"{path}: truncated video (holds {n} of the {info.expected_frames} frames its header declares)"
    return None


def read_audio_track(path: str | Path, *, mix: str = "mean") -> tuple[np.ndarray, int] | None:
    """The first audio stream of a video file as float32 (N,) and its rate; None if there is none.

    ``mix="mean"`` averages channels (librosa.load's mono); ``"first"`` keeps channel 0 (MLB's UCF101).
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")
        chunks = []
        try:
            for frame in container.decode(stream):
                for out in to_float.resample(frame):
                    chunks.append(out.to_ndarray())               # (C, n) float32
        except Exception as err:
            raise MediaError(f"{path}: audio decoding failed ({type(err).__name__}: {err})") from None
        if not chunks:
            raise MediaError(f"{path}: audio stream holds no samples")
        audio = np.concatenate(chunks, axis=1)                    # (C, N)
        mono = audio.mean(axis=0) if mix == "mean" else audio[0]
        return mono.astype(np.float32), int(stream.rate)


def _decode(path: Path, keep: set[int] | None, size: tuple[int, int], select) -> tuple[dict, int]:
    """Decode every frame; convert those with ``select(i)`` (or in ``keep``) to (H, W, 3) uint8."""
    height, width = size
    out: dict[int, np.ndarray] = {}
    n = 0
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(container.decode(stream)):
                if (keep is not None and i in keep) or (keep is None and select(i)):
                    out[i] = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
                n = i + 1
        except Exception as err:
            raise MediaError(f"{path}: video decoding failed after {n} frames ({type(err).__name__}: {err})") from None
    return out, n


@dataclass
class Frames:
    """Frames picked from one clip: ``frames`` (T, H, W, 3) uint8 and how many are true 1-fps frames."""

    frames: np.ndarray
    n_one_fps: int
    n_padded: int
    n_decoded: int


def read_frames_1fps(path: str | Path, *, n_frames: int, size: tuple[int, int], seed_key: str,
                     min_saved: int = 0, first_second: int = 0, last_second: int | None = None,
                     truncation_ratio: float = TRUNCATION_RATIO) -> Frames:
    """MLB's frame extraction: the 1-fps frames of seconds [first, last] (inclusive), topped up, first T.

    Topping up (MLB's ``min_save_frame``) adds frames drawn uniformly from frame indices
    ``[first * fps, last * fps)``, seeded by ``seed_key`` instead of an unseeded ``np.random``, then
    sorts by time; a clip with fewer than ``n_frames`` frames in the end is zero-padded, as in MLB.
    """
    path = Path(path)
    info = probe(path)
    step = max(1, int(info.fps))                                  # OpenCV: frame_number % int(fps) == 0

    def wanted(i: int) -> bool:
        second = i // step
        return i % step == 0 and second >= first_second and (last_second is None or second <= last_second)

    picked, n_decoded = _decode(path, None, size, wanted)
    if info.expected_frames and n_decoded < truncation_ratio * info.expected_frames:
        raise MediaError(f"{path}: truncated video (decoded {n_decoded} of {info.expected_frames} frames)")
    if n_decoded == 0:
        raise MediaError(f"{path}: no decodable video frame")
    lo = first_second * step
    if lo >= n_decoded:
        raise MediaError(f"{path}: segment starts at {first_second} s but the video has only {n_decoded} frames")
    if len(picked) < min_saved:
        hi = n_decoded if last_second is None else min(last_second * step, n_decoded)
        pool = np.array([i for i in range(lo, hi) if i not in picked], dtype=np.int64)
        rng = np.random.default_rng(zlib.crc32(seed_key.encode("utf-8")))
        n_extra = min(len(pool), min_saved - len(picked))
        extra = rng.choice(pool, size=n_extra, replace=False) if n_extra > 0 else []
        more, _ = _decode(path, {int(i) for i in extra}, size, None)
        picked.update(more)
    order = sorted(picked)[:n_frames]
    frames = np.zeros((n_frames, size[0], size[1], 3), dtype=np.uint8)    # MLB zero-pads missing frames
    for t, i in enumerate(order):
        frames[t] = picked[i]
    n_one_fps = sum(1 for i in order if wanted(i))
    return Frames(frames, n_one_fps, len(order) - n_one_fps, n_decoded)


# ---------------------------------------------------------------- MLB's audio recipes

@lru_cache(maxsize=8)
def _resampler(orig_sr: int, new_sr: int):
    return torchaudio.transforms.Resample(orig_sr, new_sr, lowpass_filter_width=64, rolloff=0.9475937167399596,
                                          resampling_method="sinc_interp_kaiser", beta=14.769656459379492)


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (torchaudio's 'kaiser_best' settings, kernel cached)."""
    if orig_sr == new_sr:
        return wave
    return _resampler(int(orig_sr), int(new_sr))(wave.float())


def tile_or_crop(wave: torch.Tensor, length: int, *, tile: bool = True) -> torch.Tensor:
    """MLB's ``np.tile(x, k)[:length]``: loop a short clip, then cut; without tiling, zero-pad."""
    n = wave.shape[-1]
    if n == 0:
        raise ValueError("cannot tile an empty waveform")
    if n < length:
        if tile:
            wave = wave.repeat(*([1] * (wave.dim() - 1)), math.ceil(length / n))  # (..., k*n)
        else:
            wave = torch.nn.functional.pad(wave, (0, length - n))
    return wave[..., :length]


def stft_log_magnitude(wave: torch.Tensor, *, n_fft: int = 512, hop: int = 353,
                       pad_mode: str = "constant") -> torch.Tensor:
    """librosa ``log(|stft(x, n_fft, hop, window='hann', center=True)| + 1e-7)``.

    wave (..., N) -> (..., n_fft // 2 + 1, 1 + N // hop). ``pad_mode="constant"`` is librosa >= 0.10's
    default; older librosa (0.8/0.9) padded with ``"reflect"``.
    """
    window = torch.hann_window(n_fft, periodic=True, dtype=wave.dtype, device=wave.device)
    spec = torch.stft(wave, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                      pad_mode=pad_mode, return_complex=True)  # (..., F, T) complex
    return torch.log(spec.abs() + LOG_EPS)


def stft_shape(audio: dict) -> tuple[int, int]:
    """(F, T) of the STFT recipes (CREMA-D, UCF101) for an audio config with seconds, rate, n_fft, hop."""
    n = int(round(audio["seconds"] * audio["sample_rate"]))
    return audio["n_fft"] // 2 + 1, 1 + n // audio["hop"]


def tukey_window(n: int, alpha: float = 0.25, *, periodic: bool = True,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """scipy.signal.windows.tukey; ``periodic=True`` is what ``get_window`` hands to spectrogram."""
    m = n + 1 if periodic else n
    k = torch.arange(m, dtype=torch.float64)
    w = torch.ones(m, dtype=torch.float64)
    width = int(math.floor(alpha * (m - 1) / 2.0))
    if alpha > 0 and width > 0:
        lo = k[: width + 1]
        w[: width + 1] = 0.5 * (1 + torch.cos(math.pi * (-1 + 2.0 * lo / (alpha * (m - 1)))))
        hi = k[m - width - 1:]
        w[m - width - 1:] = 0.5 * (1 + torch.cos(math.pi * (-2.0 / alpha + 1 + 2.0 * hi / (alpha * (m - 1)))))
    return (w[:n] if periodic else w).to(dtype)


def psd_log_spectrogram(wave: torch.Tensor, sample_rate: int, *, nperseg: int = 512,
                        noverlap: int = 353) -> torch.Tensor:
    """``log(scipy.signal.spectrogram(x, fs, nperseg, noverlap)[2] + 1e-7)`` (PSD, Tukey 0.25).

    wave (..., N) -> (..., nperseg // 2 + 1, 1 + (N - nperseg) // (nperseg - noverlap)); no centring.
    """
    hop = nperseg - noverlap
    frames = wave.unfold(-1, nperseg, hop)                  # (..., T, nperseg)
    frames = frames - frames.mean(dim=-1, keepdim=True)     # detrend="constant"
    window = tukey_window(nperseg, 0.25, dtype=wave.dtype).to(wave.device)
    spec = torch.fft.rfft(frames * window, dim=-1)          # (..., T, F) complex
    psd = spec.real ** 2 + spec.imag ** 2
    psd = psd / (sample_rate * (window ** 2).sum())         # scaling="density"
    if nperseg % 2 == 0:
        psd[..., 1:-1] *= 2                                  # one-sided: double all but DC and Nyquist
    else:
        psd[..., 1:] *= 2
    return torch.log(psd.transpose(-1, -2) + LOG_EPS)       # (..., F, T)


def cremad_spectrogram(wave: torch.Tensor, *, sample_rate: int = 22050, seconds: float = 3.0,
                       n_fft: int = 512, hop: int = 353, pad_mode: str = "constant") -> torch.Tensor:
    """CREMA-D recipe on a mono waveform already at ``sample_rate``: (N,) -> (257, 188) by default."""
    x = tile_or_crop(wave, int(round(seconds * sample_rate)), tile=True).clamp(-1.0, 1.0)
    return stft_log_magnitude(x, n_fft=n_fft, hop=hop, pad_mode=pad_mode)


def ucf101_spectrogram(wave: torch.Tensor, *, sample_rate: int = 16000, seconds: float = 3.0,
                       n_fft: int = 512, hop: int = 353, pad_mode: str = "constant") -> torch.Tensor:
    """UCF101 recipe: first ``seconds`` (zero-padded if shorter), clip, STFT: (N,) -> (257, 136)."""
    x = tile_or_crop(wave, int(round(seconds * sample_rate)), tile=False).clamp(-1.0, 1.0)
    return stft_log_magnitude(x, n_fft=n_fft, hop=hop, pad_mode=pad_mode)


def ave_spectrogram(segment: torch.Tensor, *, sample_rate: int = 16000, seconds: float = 10.0,
                    nperseg: int = 512, noverlap: int = 353) -> torch.Tensor:
    """AVE recipe on the annotated event segment: tile to 10 s, clip, log PSD: (N,) -> (257, 1004)."""
    x = tile_or_crop(segment, int(round(seconds * sample_rate)), tile=True).clamp(-1.0, 1.0)
    return psd_log_spectrogram(x, sample_rate, nperseg=nperseg, noverlap=noverlap)
