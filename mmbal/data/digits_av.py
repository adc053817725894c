"""``digits_av``: sklearn handwritten digits (video) paired by label with espeak-ng spoken digits (audio).
The embedded default dataset: voices held out whole for val/test, train pairs redrawn every epoch, and a
fixed fraction of pairs whose audio is noise, so fusion can beat either modality. With ``redraw=False`` the
training pairs are drawn once, as in a recorded dataset, so a model can memorise them. ``test_repeats=R``
renders every test image R times (its own frame noise, shifts and clip each time): a test split R times as
large, so accuracies and probes are measured with less sampling noise; ``val_repeats=R`` does the same for
validation, so the epoch picked on validation accuracy depends less on a few pairs. ``split_seed`` fixes the
image split and the val/test pairs and renderings for every seed, like a recorded dataset's fixed split; the seed then
moves only the training pairs, the initialisation and the batch order. ``heldout_audio_uninformative_frac``
gives validation and test their own fraction of noise-audio pairs (None: the training fraction), e.g. clean
training audio and a test set where the microphone sometimes fails."""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmbal.data.base import DATASETS, DatasetSplits
from mmbal.data.tensor_dataset import TensorSplit, check_option

BANK_FILE = "spoken_digits.npz"
DEFAULT_BANK = Path(__file__).resolve().parent / "assets" / BANK_FILE
CLASS_NAMES = [str(d) for d in range(10)]
VAL_VOICES, TEST_VOICES = ("m5",), ("f4", "klatt4", "m7")   # held out whole: speaker-independent val / test
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)   # images: train / val / test, stratified by digit
CLIP_SECONDS = 1.0
N_FFT, HOP = 256, 128                  # 8 kHz, 1 s -> (129, 61) -> avg-pooled (64, 30)
LOG_EPS = 1e-3                         # floor of the magnitude before the log (about -60 dB re 1.0)
_check = partial(check_option, "digits_av")


def mulaw_decode(codes: np.ndarray) -> np.ndarray:
    """8-bit mu-law codes (mu = 255) -> float32 in [-1, 1]; inverse of make_spoken_digits.mulaw_encode."""
    y = codes.astype(np.float32) / 255.0 * 2.0 - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(255.0)) / 255.0).astype(np.float32)


@dataclass(frozen=True)
class AudioBank:
    """The decoded clips, each centred in a fixed window, with their metadata (read-only, cached)."""

    waves: torch.Tensor      # (N, S) float32, S = sample_rate * CLIP_SECONDS
    rms: torch.Tensor        # (N,) RMS of the speech part (before padding)
    spec: torch.Tensor       # (N, 1, 64, 30) log-magnitude spectrogram of the clean clip
    labels: np.ndarray       # (N,) int64 digit
    voices: np.ndarray       # (N,) str, the held-out unit (an espeak-ng voice variant)
    accents: np.ndarray      # (N,) str
    sample_rate: int
    espeak_version: str


def spectrogram(waves: torch.Tensor) -> torch.Tensor:
    """(N, S) waveforms -> (N, 1, 64, 30) average-pooled log-magnitude STFT (n_fft 256, hop 128)."""
    spec = torch.stft(waves, n_fft=N_FFT, hop_length=HOP, window=torch.hann_window(N_FFT),
                      center=False, return_complex=True)                       # (N, 129, 61)
    return F.avg_pool2d(torch.log(spec.abs() + LOG_EPS).unsqueeze(1), 2)      # (N, 1, 129, 61) -> (N, 1, 64, 30)


def change_speed(waves: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """Play each (N, S) waveform ``rate`` (N,) times faster about the window centre (pitch moves too)."""
    size, centre = waves.shape[1], (waves.shape[1] - 1) / 2
    pos = centre + (torch.arange(size) - centre) * rate[:, None]               # (N, S) read positions
    lo = pos.floor().long()
    inside = (lo >= 0) & (lo < size)
    lo = lo.clamp(0, size - 1)
    padded = F.pad(waves, (0, 1))                                              # (N, S + 1), 0 at the end
    return torch.lerp(padded.gather(1, lo), padded.gather(1, lo + 1), pos - lo) * inside  # linear interpolation


def load_bank(root: str | Path | None = None) -> AudioBank:
    """The bank at ``root`` (a folder holding spoken_digits.npz, or the file; None: the packaged one); a
    missing or unreadable file raises FileNotFoundError naming the command that regenerates it."""
    path = DEFAULT_BANK if root is None else Path(root)
    path = path / BANK_FILE if path.is_dir() or path.suffix != ".npz" else path
    try:
        return _load_bank(str(path.resolve()), path.stat().st_mtime_ns)
    except (OSError, KeyError, ValueError) as err:
        raise FileNotFoundError(
            f"digits_av: cannot read the spoken-digit bank {path} ({type(err).__name__}: {err}); "
            f"regenerate it with `python -m data_scripts.make_spoken_digits --out {path}` (needs espeak-ng)") from None


@lru_cache(maxsize=2)
def _load_bank(path: str, mtime_ns: int) -> AudioBank:         # mtime_ns: a re-rendered file is read again
    with np.load(path, allow_pickle=False) as z:
        if str(z["encoding"]) != "mulaw8":
            raise ValueError(f"unknown encoding {z['encoding']}")
        samples, offsets, lengths = mulaw_decode(z["samples"]), z["offsets"], z["lengths"]
        meta = {"labels": z["label"].astype(np.int64), "voices": z["voice"], "accents": z["accent"],
                "sample_rate": int(z["sample_rate"]), "espeak_version": str(z["espeak_version"])}
    size = int(meta["sample_rate"] * CLIP_SECONDS)
    waves, rms = np.zeros((len(lengths), size), np.float32), np.zeros(len(lengths), np.float32)  # (N, S), (N,)
    for i, (start, n) in enumerate(zip(offsets, lengths)):
        clip = samples[start:start + n][max(n - size, 0) // 2:][:size]       # its centre, if longer than S
        begin = (size - len(clip)) // 2                                       # centre in the window
        waves[i, begin:begin + len(clip)] = clip
        rms[i] = np.sqrt(np.mean(clip.astype(np.float64) ** 2))
    waves_t = torch.from_numpy(waves)
    return AudioBank(waves=waves_t, rms=torch.from_numpy(rms), spec=spectrogram(waves_t), **meta)


@lru_cache(maxsize=1)
def _digit_images() -> tuple[torch.Tensor, np.ndarray]:
    """sklearn's 1,797 handwritten 8x8 digits scaled to [0, 1]: ((N, 8, 8) float32, (N,) int64), read from
    the CSV inside scikit-learn (importing sklearn.datasets takes ~1.5 s), else from ``load_digits()``."""
    csv = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0]) / "datasets/data/digits.csv.gz"
    if csv.is_file():
        table = np.loadtxt(csv, delimiter=",")                                 # (1797, 64 pixels + label)
    else:                                                                      # sklearn moved the file
        from sklearn.datasets import load_digits

        table = np.column_stack(load_digits(return_X_y=True))
    return torch.from_numpy(table[:, :64].reshape(-1, 8, 8).astype(np.float32) / 16.0), table[:, 64].astype(np.int64)


def render_frames(images: torch.Tensor, rng: np.random.Generator, *, frames: int, max_shift: int,
                  noise: float) -> torch.Tensor:
    """(N, S, S) clean images -> (N, 1, T, S, S): each frame shifted by up to +-max_shift px, plus noise."""
    n, size = images.shape[0], images.shape[-1]
    padded = F.pad(images, (max_shift,) * 4)                                   # (N, S+2m, S+2m)
    shifts = torch.from_numpy(rng.integers(-max_shift, max_shift + 1, size=(n, frames, 2)))  # (N, T, 2)
    rows = (max_shift - shifts[..., 0, None] + torch.arange(size))[:, :, :, None]  # (N, T, S, 1): moves by dy
    cols = (max_shift - shifts[..., 1, None] + torch.arange(size))[:, :, None, :]  # (N, T, 1, S): moves by dx
    video = padded[torch.arange(n)[:, None, None, None], rows, cols].unsqueeze(1)  # (N, 1, T, S, S)
    return video + noise * torch.from_numpy(rng.standard_normal(video.shape, dtype=np.float32))


class DigitsAVSplit(TensorSplit):
    """One split: images of this split, each paired with a same-label clip spoken by this split's voices.
    ``clip_index`` (N,) is the paired bank clip, ``uninformative`` (N,) marks pairs whose audio is noise
    (fixed per pair), ``voices`` the voices allowed here. Train pairs follow ``set_epoch``."""

    def __init__(self, *, stream: int, seed: int, bank: AudioBank, image_index: np.ndarray,
                 images: torch.Tensor, labels: np.ndarray, voices: tuple[str, ...], options: dict,
                 audio_stats: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.stream, self.seed, self.bank, self.voices, self.options = stream, seed, bank, voices, options
        self.redraw = stream == 0 and options["redraw"]                        # train (stream 0) redraws pairs
        self.image_index, self.images = image_index, images                   # (N,) into load_digits, (N, S, S) clean
        spoken_here = np.isin(bank.voices, voices)                             # (bank N,) by this split's voices
        self.clip_pool = {c: (np.flatnonzero(labels == c), np.flatnonzero((bank.labels == c) & spoken_here))
                          for c in range(len(CLASS_NAMES))}                    # label -> (its images, bank clips)
        rank = np.argsort(np.random.default_rng([seed, stream, 0]).permutation(len(labels)))  # (N,) place in a shuffle
        frac = options["heldout_audio_uninformative_frac"]                     # val / test may have their own
        frac = options["audio_uninformative_frac"] if stream == 0 or frac is None else frac
        self.uninformative = rank < round(frac * len(labels))                  # (N,) fixed, all epochs
        self.epoch, self.audio_stats = 0, audio_stats                          # None: train sets them at epoch 0
        super().__init__(self._draw(epoch=0), torch.from_numpy(labels), class_names=CLASS_NAMES)

    @property
    def clip_labels(self) -> np.ndarray:
        """(N,) digit spoken in each pair's clip (equals the image label by construction)."""
        return self.bank.labels[self.clip_index]

    def set_epoch(self, epoch: int) -> None:
        """Train (unless ``redraw=False``): redraw pairs, frame shifts and noise from (seed, epoch). Val/test stay
        fixed."""
        _check(epoch >= 0, "epoch", "an integer >= 0", epoch)
        if self.redraw and epoch != self.epoch:
            self.epoch = epoch
            self.inputs.update(self._draw(epoch=epoch))

    def _draw(self, *, epoch: int) -> dict[str, torch.Tensor]:
        """Pair every image with a clip (``clip_index``), then build the standardised audio (N, 1, 64, 30) and
        the video (N, 1, T, S, S); clean clips are indexed, pairs with noise or a speed change go through the STFT."""
        rng = np.random.default_rng([self.seed, self.stream, (epoch if self.redraw else 0) + 1])
        bank, opt, n = self.bank, self.options, len(self.uninformative)
        self.clip_index = np.empty(n, dtype=np.int64)                          # (N,)
        for rows, pool in self.clip_pool.values():
            self.clip_index[rows] = pool[rng.integers(0, len(pool), size=len(rows))]
        video = render_frames(self.images, rng, frames=opt["frames"], max_shift=opt["max_shift"],
                              noise=opt["image_noise"])
        snr_db, jitter = opt["audio_snr_db"], (opt["audio_speed_jitter"] if self.stream == 0 else 0.0)  # train
        audio = bank.spec[self.clip_index].clone()                             # (N, 1, 64, 30)
        rows = np.flatnonzero(self.uninformative) if snr_db is None and jitter == 0 else np.arange(n)
        if len(rows) > 0:
            waves = bank.waves[self.clip_index[rows]]                          # (n, S)
            if jitter > 0:                                                     # rates (n,)
                waves = change_speed(waves, torch.from_numpy(rng.uniform(1 - jitter, 1 + jitter, len(rows))).float())
            noise = torch.from_numpy(rng.standard_normal(waves.shape, dtype=np.float32))
            if snr_db is not None:                                             # speech RMS (n, 1) x 10^(-SNR/20)
                waves = waves + noise * bank.rms[self.clip_index[rows]].unsqueeze(1) * 10 ** (-snr_db / 20)
            # uninformative: noise alone at the bank's median speech level, independent of the label
            silent = torch.from_numpy(self.uninformative[rows]).unsqueeze(1)   # (n, 1)
            audio[rows] = spectrogram(torch.where(silent, noise * float(bank.rms.median()), waves))
        if self.audio_stats is None:                                           # train: (1, 1, F, 1) per bin
            self.audio_stats = (audio.mean(dim=(0, 3), keepdim=True),
                                audio.std(dim=(0, 3), keepdim=True).clamp_min(1e-6))
        mean, std = self.audio_stats
        return {"audio": ((audio - mean) / std).contiguous(), "video": video}


@DATASETS.register("digits_av")
def build_digits_av(*, seed: int, root: str | None = None, image_noise: float = 1.0,
                    audio_snr_db: float | None = None, audio_uninformative_frac: float = 0.3,
                    audio_speed_jitter: float = 0.0, frames: int = 3, image_size: int = 16, max_shift: int = 1,
                    redraw: bool = True, test_repeats: int = 1, val_repeats: int = 1, split_seed: int | None = None,
                    heldout_audio_uninformative_frac: float | None = None,
                    val_voices: tuple[str, ...] = VAL_VOICES, test_voices: tuple[str, ...] = TEST_VOICES,
                    max_train: int | None = None) -> DatasetSplits:
    """Handwritten digits (video, 3 noisy frames) + spoken digits (audio) with speaker-independent splits."""
    _check(isinstance(seed, (int, np.integer)) and seed >= 0, "seed", "an integer >= 0", seed)
    _check(math.isfinite(image_noise) and image_noise >= 0, "image_noise", ">= 0", image_noise)
    _check(audio_snr_db is None or math.isfinite(audio_snr_db), "audio_snr_db",
           "None (clean) or a finite number of dB", audio_snr_db)
    _check(0 <= audio_uninformative_frac < 1, "audio_uninformative_frac", "in [0, 1)", audio_uninformative_frac)
    _check(heldout_audio_uninformative_frac is None or 0 <= heldout_audio_uninformative_frac < 1,
           "heldout_audio_uninformative_frac", "None (as in training) or in [0, 1)", heldout_audio_uninformative_frac)
    _check(math.isfinite(audio_speed_jitter) and 0 <= audio_speed_jitter <= 0.3, "audio_speed_jitter",
           "in [0, 0.3]", audio_speed_jitter)
    _check(isinstance(redraw, bool), "redraw", "True (train pairs redrawn every epoch) or False (drawn once)", redraw)
    _check(split_seed is None or (isinstance(split_seed, (int, np.integer)) and split_seed >= 0), "split_seed",
           "None (the split follows the seed) or an integer >= 0", split_seed)
    for knob, repeats in (("test_repeats", test_repeats), ("val_repeats", val_repeats)):
        _check(isinstance(repeats, int) and not isinstance(repeats, bool) and repeats >= 1,
               knob, f"an integer >= 1 ({knob[:-8]} renderings of each {knob[:-8]} image)", repeats)
    _check(isinstance(frames, int) and frames >= 1, "frames", "an integer >= 1", frames)
    _check(isinstance(image_size, int) and image_size >= 8, "image_size", "an integer >= 8", image_size)
    _check(isinstance(max_shift, int) and 0 <= max_shift < image_size // 2, "max_shift",
           f"an integer in [0, {image_size // 2})", max_shift)
    _check(max_train is None or (isinstance(max_train, int) and max_train >= 1), "max_train",
           "None (all) or an integer >= 1", max_train)
    bank = load_bank(root)
    val_voices, test_voices = ((v,) if isinstance(v, str) else tuple(v) for v in (val_voices, test_voices))
    known = sorted(set(bank.voices.tolist()))
    for knob, voices in (("val_voices", val_voices), ("test_voices", test_voices)):
        _check(len(voices) > 0 and set(voices) <= set(known), knob,
               f"a non-empty subset of the bank's voices {known}", voices)
    _check(not set(val_voices) & set(test_voices), "val_voices / test_voices", "disjoint", (val_voices, test_voices))
    train_voices = tuple(v for v in known if v not in val_voices + test_voices)
    _check(len(train_voices) > 0, "val_voices + test_voices", "leave at least one training voice",
           (val_voices, test_voices))
    digits, digit_labels = _digit_images()                                     # (1797, 8, 8), (1797,)
    held_out_seed = int(seed if split_seed is None else split_seed)           # the split and the val/test draws
    rng = np.random.default_rng([held_out_seed, 99])
    parts: list[list[np.ndarray]] = [[], [], []]                               # train / val / test images
    for c in np.unique(digit_labels):                                          # shuffled, split per digit
        idx = rng.permutation(np.flatnonzero(digit_labels == c))
        n_val, n_test = (round(frac * len(idx)) for frac in SPLIT_FRACTIONS[1:])
        for part, chunk in zip(parts, np.split(idx, [len(idx) - n_val - n_test, len(idx) - n_test])):
            part.append(chunk)
    index = [np.sort(np.concatenate(p)) for p in parts]
    if max_train is not None and max_train < len(index[0]):
        index[0] = np.sort(rng.permutation(index[0])[:max_train])
    index[1] = np.tile(index[1], val_repeats)                                  # (R * N_val,): R renderings each
    index[2] = np.tile(index[2], test_repeats)                                 # (R * N_test,)
    upsampled = F.interpolate(digits.unsqueeze(1), size=(image_size, image_size), mode="bilinear",
                              align_corners=False).squeeze(1)                  # (1797, S, S)
    options = {"image_noise": float(image_noise), "audio_snr_db": audio_snr_db, "frames": frames,
               "max_shift": max_shift, "audio_uninformative_frac": float(audio_uninformative_frac),
               "heldout_audio_uninformative_frac": None if heldout_audio_uninformative_frac is None
               else float(heldout_audio_uninformative_frac),
               "audio_speed_jitter": float(audio_speed_jitter), "redraw": redraw}
    splits = []
    for stream, (voices, idx) in enumerate(zip((train_voices, val_voices, test_voices), index)):  # train, val, test
        splits.append(DigitsAVSplit(stream=stream, seed=int(seed) if stream == 0 else held_out_seed, bank=bank,
                                    image_index=idx, images=upsampled[idx], labels=digit_labels[idx],
                                    voices=tuple(sorted(voices)), options=options,
                                    audio_stats=splits[0].audio_stats if splits else None))
    return DatasetSplits(*splits)                                              # train's audio statistics for all
