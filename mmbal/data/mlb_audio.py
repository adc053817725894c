"""Audio recipes of the MLB protocol (paper §4.2–4.4), in plain torch.

CREMA-D and UCF101 use librosa's ``stft`` (Hann, ``center=True``) and ``log(|X| + 1e-7)``;
AVE uses ``scipy.signal.spectrogram`` (Tukey(0.25), constant detrend, one-sided PSD) and
``log(S + 1e-7)``. Both are rebuilt here on ``torch.stft`` / ``torch.fft`` and checked against
scipy in the tests. Resampling uses torchaudio's Kaiser-windowed sinc (librosa uses soxr).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

LOG_EPS = 1e-7

# CREMA-D: librosa.load(sr=22050), tile x3, cut to 3 s, stft(n_fft=512, hop=353) -> 257 x 188
CREMAD_AUDIO = {"sample_rate": 22050, "seconds": 3.0, "n_fft": 512, "hop": 353, "tile": True}
# AVE: 16 kHz, event segment tiled to 10 s, scipy spectrogram(nperseg=512, noverlap=353) -> 257 x 1004
AVE_AUDIO = {"sample_rate": 16000, "seconds": 10.0, "nperseg": 512, "noverlap": 353}
# UCF101: 16 kHz first channel, first 3 s (no tiling), stft(n_fft=512, hop=353) -> 257 x 136
UCF101_AUDIO = {"sample_rate": 16000, "seconds": 3.0, "n_fft": 512, "hop": 353, "tile": False}


@lru_cache(maxsize=8)
def _resampler(orig_sr: int, new_sr: int):
    import torchaudio  # imported lazily: only the prepare step resamples

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
