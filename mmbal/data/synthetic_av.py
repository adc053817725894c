"""``synthetic_av``: a seeded numpy generator with the real batch layout, for fast unit tests.
Audio: a class-specific tone (log-spaced frequency) with noise, as a log-magnitude STFT (1, F, T); video: a
class-specific bar row in T noisy frames (1, T, H, W); ``*_uninformative_frac`` of the samples are pure noise."""
from __future__ import annotations

import numpy as np
import torch

from mmbal.data.base import DATASETS, DatasetSplits
from mmbal.data.tensor_dataset import TensorSplit, check_option

SAMPLE_RATE = 4000


def _audio(labels: np.ndarray, rng: np.random.Generator, uninformative: np.ndarray, *, num_classes: int,
           snr_db: float, n_fft: int, duration: float) -> torch.Tensor:
    t = np.arange(int(SAMPLE_RATE * duration)) / SAMPLE_RATE                     # (S,)
    freqs = np.geomspace(200.0, 1600.0, num_classes)[labels]                    # (N,)
    freqs = freqs * 2 ** (rng.uniform(-0.5, 0.5, len(labels)) / 12)              # +-0.5 semitone jitter
    phase = rng.uniform(0, 2 * np.pi, len(labels))
    wave = np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phase[:, None])      # (N, S)
    noise = rng.normal(0.0, 1.0, wave.shape)
    wave = np.where(uninformative[:, None], noise, wave + 10 ** (-snr_db / 20) / np.sqrt(2) * noise)  # SNR in dB
    spec = torch.stft(torch.from_numpy(wave).float(), n_fft=n_fft, hop_length=n_fft // 2,
                      window=torch.hann_window(n_fft), return_complex=True)      # (N, F, T)
    return torch.log(spec.abs() + 1e-4).unsqueeze(1)                             # (N, 1, F, T)


def _video(labels: np.ndarray, rng: np.random.Generator, uninformative: np.ndarray, *, num_classes: int,
           noise: float, frames: int, size: int) -> torch.Tensor:
    n = len(labels)
    video = rng.normal(0.0, noise, (n, 1, frames, size, size)).astype(np.float32)
    rows = np.linspace(1, size - 2, num_classes).round().astype(int)[labels]     # class -> bar row
    rows = np.clip(rows[:, None] + rng.integers(-1, 2, (n, frames)), 0, size - 1)  # (N, T), +-1 px per frame
    video[np.flatnonzero(~uninformative)[:, None], 0, np.arange(frames), rows[~uninformative], :] += 1.0
    return torch.from_numpy(video)


@DATASETS.register("synthetic_av")
def build_synthetic_av(*, seed: int, root: str | None = None, num_classes: int = 6,
                       sizes: tuple[int, int, int] = (600, 150, 150), audio_snr_db: float = 0.0,
                       video_noise: float = 1.5, audio_uninformative_frac: float = 0.3,
                       video_uninformative_frac: float = 0.0, frames: int = 3, image_size: int = 12,
                       n_fft: int = 62, duration: float = 0.25) -> DatasetSplits:
    """Seeded synthetic audio (tones) + video (bars) classification task with tunable imbalance."""
    del root  # generated, nothing on disk
    check_option("synthetic_av", num_classes >= 2, "num_classes", ">= 2", num_classes)
    check_option("synthetic_av", video_noise >= 0, "video_noise", ">= 0", video_noise)
    for knob, frac in (("audio_uninformative_frac", audio_uninformative_frac),
                       ("video_uninformative_frac", video_uninformative_frac)):
        check_option("synthetic_av", 0 <= frac < 1, knob, "in [0, 1)", frac)
    rng = np.random.default_rng(seed)
    names = [f"class{c}" for c in range(num_classes)]
    splits = []
    for n in sizes:
        labels = rng.integers(0, num_classes, n)
        audio = _audio(labels, rng, rng.random(n) < audio_uninformative_frac, num_classes=num_classes,
                       snr_db=audio_snr_db, n_fft=n_fft, duration=duration)
        video = _video(labels, rng, rng.random(n) < video_uninformative_frac, num_classes=num_classes,
                       noise=video_noise, frames=frames, size=image_size)
        splits.append(TensorSplit({"audio": audio, "video": video}, torch.from_numpy(labels), class_names=names))
    mean, std = splits[0].inputs["audio"].mean(), splits[0].inputs["audio"].std()
    for split in splits:                                                         # train-split statistics
        split.inputs["audio"] = (split.inputs["audio"] - mean) / std
    return DatasetSplits(*splits)
