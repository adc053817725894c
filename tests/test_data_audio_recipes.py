"""The MLB audio recipes (paper §4.2-4.4) against scipy and hand-computed values."""
import math

import numpy as np
import pytest
import scipy.signal as ss
import torch

from data_scripts import media as A


@pytest.mark.parametrize("n", [512, 64, 31])
@pytest.mark.parametrize("periodic", [True, False])
def test_tukey_window_matches_scipy(n, periodic):
    ours = A.tukey_window(n, 0.25, periodic=periodic, dtype=torch.float64).numpy()
    np.testing.assert_allclose(ours, ss.get_window(("tukey", 0.25), n, fftbins=periodic), atol=1e-12)


def test_psd_spectrogram_matches_scipy_spectrogram():
    x = np.random.default_rng(0).uniform(-1, 1, 16000 * 2)
    _, _, ref = ss.spectrogram(x, 16000, nperseg=512, noverlap=353)         # Tukey(.25), detrend, density
    ours = A.psd_log_spectrogram(torch.from_numpy(x), 16000).numpy()
    assert ours.shape == ref.shape == (257, 1 + (32000 - 512) // 159)
    np.testing.assert_allclose(ours, np.log(ref + 1e-7), atol=1e-9)


@pytest.mark.parametrize("pad_mode,boundary", [("constant", "zeros"), ("reflect", "even")])
def test_stft_matches_scipy_centred_stft(pad_mode, boundary):
    x = np.random.default_rng(1).uniform(-1, 1, 22050)
    _, _, z = ss.stft(x, window="hann", nperseg=512, noverlap=512 - 353, boundary=boundary, padded=False)
    ref = np.log(np.abs(z) * ss.get_window("hann", 512).sum() + 1e-7)     # scipy scales by 1 / sum(window)
    ours = A.stft_log_magnitude(torch.from_numpy(x), pad_mode=pad_mode).numpy()
    assert ours.shape == ref.shape == (257, 1 + 22050 // 353)
    np.testing.assert_allclose(ours, ref, atol=1e-8)   # scipy "even" reflects about the edge sample, as torch


def test_cremad_spectrogram_is_257_by_188_with_a_hand_checked_value():
    wave = torch.full((3 * 22050,), 0.5)                 # a constant signal, 3 s at 22.05 kHz
    spec = A.cremad_spectrogram(wave)
    assert spec.shape == (257, 188)
    # an interior frame sees 512 samples of 0.5 under a periodic Hann window, whose sum is 256:
    # the DC bin is |sum(0.5 * w)| = 128, every other bin ~0
    assert spec[0, 50].item() == pytest.approx(math.log(128 + 1e-7), abs=1e-5)
    assert spec[5, 50].item() < math.log(1e-3)


def test_cremad_short_clip_is_tiled_like_np_tile():
    x = torch.linspace(-0.3, 0.3, 10000)
    tiled = A.tile_or_crop(x, 66150)
    np.testing.assert_array_equal(tiled.numpy(), np.tile(x.numpy(), 7)[:66150])
    np.testing.assert_allclose(A.cremad_spectrogram(x).numpy(), A.stft_log_magnitude(tiled).numpy())


def test_clipping_to_unit_range_before_the_transform():
    loud = torch.full((66150,), 3.0)
    np.testing.assert_allclose(A.cremad_spectrogram(loud).numpy(), A.cremad_spectrogram(torch.ones(66150)).numpy())


def test_ucf_recipe_takes_first_3_s_without_tiling():
    x = torch.randn(5 * 16000) * 0.1
    assert A.ucf101_spectrogram(x).shape == (257, 136)
    np.testing.assert_allclose(A.ucf101_spectrogram(x).numpy(), A.stft_log_magnitude(x[:48000]).numpy())
    short = A.ucf101_spectrogram(x[:16000])              # 1 s: zero-padded, the end is silent
    assert short.shape == (257, 136) and short[:, -10:].max().item() == pytest.approx(math.log(1e-7), abs=1e-3)


def test_ave_recipe_tiles_the_segment_to_10_s():
    seg = torch.randn(3 * 16000) * 0.1
    spec = A.ave_spectrogram(seg)
    assert spec.shape == (257, 1004)
    np.testing.assert_allclose(spec.numpy(), A.psd_log_spectrogram(seg.repeat(4)[:160000], 16000).numpy())


def test_resampling_keeps_a_tone_at_its_frequency():
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * math.pi * 1000 * t)
    up = A.resample(tone, 16000, 22050)
    assert up.shape == (22050,)
    freqs = np.fft.rfftfreq(22050, 1 / 22050)
    assert freqs[np.abs(np.fft.rfft(up.numpy())).argmax()] == pytest.approx(1000, abs=1.0)
