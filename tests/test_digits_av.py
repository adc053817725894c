"""Digits-AV: the committed spoken-digit bank, the speaker-independent splits, pairing and knobs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmbal.data import DATASETS
from mmbal.data import digits_av

BANK = digits_av.DEFAULT_BANK


@pytest.fixture(scope="module")
def splits():
    return DATASETS.create("digits_av", seed=0)


def test_registered():
    assert "digits_av" in DATASETS


def test_committed_bank_is_small_and_complete():
    assert BANK.is_file()
    assert BANK.stat().st_size <= 5 * 1024 * 1024
    with np.load(BANK) as z:
        labels, voices, accents = z["label"], z["voice"], z["accent"]
        assert int(z["sample_rate"]) == 8000
        assert "1.51" in str(z["espeak_version"])
        assert z["offsets"][-1] + z["lengths"][-1] == len(z["samples"])
    assert len(labels) == 840
    assert len(set(voices.tolist())) == 12 and len(set(accents.tolist())) == 7
    for v in set(voices.tolist()):                       # every voice says every digit in every accent
        counts = np.bincount(labels[voices == v], minlength=10)
        assert counts.tolist() == [7] * 10


def test_mulaw_round_trip():
    from data_scripts.make_spoken_digits import mulaw_encode

    x = np.linspace(-1, 1, 2001, dtype=np.float32)
    y = digits_av.mulaw_decode(mulaw_encode(x))
    err = np.abs(y - x)
    assert np.all(err <= 0.025 * np.abs(x) + 2e-4)       # half a step: ~2 % of the value, finer near 0
    assert err[np.abs(x) < 0.01].max() < 2e-4


def test_shapes_dtypes_and_labels(splits):
    sample = splits.train[0]
    assert sample["audio"].shape == (1, 64, 30) and sample["audio"].dtype == torch.float32
    assert sample["video"].shape == (1, 3, 16, 16) and sample["video"].dtype == torch.float32
    assert sample["label"].shape == () and sample["label"].dtype == torch.int64
    assert splits.input_shapes() == {"audio": (1, 64, 30), "video": (1, 3, 16, 16)}
    assert splits.num_classes == 10 and splits.train.class_names == [str(d) for d in range(10)]
    assert splits.sizes() == {"train": 1259, "val": 269, "test": 269}  # 1,797 images, stratified 70/15/15
    for split in (splits.train, splits.val, splits.test):
        labels = split.labels()
        assert labels.dtype == torch.int64 and labels.min() == 0 and labels.max() == 9
        assert torch.equal(labels[:5], torch.stack([split[i]["label"] for i in range(5)]))
    # audio standardised with training statistics: train is centred, the others only roughly
    assert abs(splits.train.inputs["audio"].mean().item()) < 1e-4
    assert abs(splits.train.inputs["audio"].std().item() - 1) < 1e-3


def test_images_and_voices_are_disjoint(splits):
    train, val, test = (set(s.voices) for s in (splits.train, splits.val, splits.test))
    assert val == {"m5"} and test == {"f4", "klatt4", "m7"} and len(train) == 8
    assert not (train & val or train & test or val & test)
    bank_voices = splits.train.bank.voices
    for split in (splits.train, splits.val, splits.test):  # every paired clip is spoken by a split voice
        assert set(bank_voices[split.clip_index].tolist()) <= set(split.voices)
    images = [set(s.image_index.tolist()) for s in (splits.train, splits.val, splits.test)]
    assert not (images[0] & images[1] or images[0] & images[2] or images[1] & images[2])


def test_pairs_share_the_label(splits):
    for split in (splits.train, splits.val, splits.test):
        np.testing.assert_array_equal(split.clip_labels, split.labels().numpy())


def test_same_seed_same_tensors_and_epoch_redraws_train_only():
    a = DATASETS.create("digits_av", seed=3, max_train=300)
    b = DATASETS.create("digits_av", seed=3, max_train=300)
    for m in ("audio", "video"):
        torch.testing.assert_close(a.train.inputs[m], b.train.inputs[m], rtol=0, atol=0)
        torch.testing.assert_close(a.test.inputs[m], b.test.inputs[m], rtol=0, atol=0)
    clips0, video0 = a.train.clip_index.copy(), a.train.inputs["video"].clone()
    val_clips, val_audio = a.val.clip_index.copy(), a.val.inputs["audio"].clone()
    a.train.set_epoch(1)
    a.val.set_epoch(1)
    assert (a.train.clip_index != clips0).mean() > 0.5    # re-paired
    assert not torch.equal(a.train.inputs["video"], video0)
    np.testing.assert_array_equal(a.val.clip_index, val_clips)
    assert torch.equal(a.val.inputs["audio"], val_audio)
    a.train.set_epoch(0)                                  # epochs are reproducible
    np.testing.assert_array_equal(a.train.clip_index, clips0)
    assert torch.equal(a.train.inputs["video"], video0)
    c = DATASETS.create("digits_av", seed=4, max_train=50)
    assert not np.array_equal(c.val.image_index, a.val.image_index)  # another seed, another split


@pytest.mark.parametrize("frac", [0.0, 0.3, 0.6])
def test_uninformative_fraction(frac):
    s = DATASETS.create("digits_av", seed=1, audio_uninformative_frac=frac, max_train=300)
    for split in (s.train, s.val, s.test):
        assert abs(split.uninformative.mean() - frac) <= 0.05
    fixed = s.train.uninformative.copy()
    s.train.set_epoch(2)                                  # which pairs are noise never changes
    np.testing.assert_array_equal(s.train.uninformative, fixed)
    mean, std = s.test.audio_stats
    clean = (s.test.bank.spec[s.test.clip_index] - mean) / std                  # (N, 1, 64, 30)
    diff = (s.test.inputs["audio"] - clean).abs().flatten(1).amax(dim=1)        # (N,)
    noise = torch.from_numpy(s.test.uninformative)
    assert torch.all(diff[~noise] < 1e-5)                 # informative pairs: the clean clip, untouched
    assert torch.all(diff[noise] > 1.0)                   # the others: replaced by noise


def test_options_change_the_data():
    s = DATASETS.create("digits_av", seed=0, max_train=100, frames=5, image_size=24, audio_snr_db=0.0,
                      image_noise=0.0, audio_uninformative_frac=0.0)
    assert s.sizes()["train"] == 100
    assert s.input_shapes()["video"] == (1, 5, 24, 24)
    video = s.test.inputs["video"]
    assert video.min() >= 0 and video.max() <= 1          # no noise: shifted clean digits
    assert not s.test.uninformative.any()
    mean, std = s.test.audio_stats                        # 0 dB SNR: every clip is changed by the noise
    clean = (s.test.bank.spec[s.test.clip_index] - mean) / std
    assert (s.test.inputs["audio"] - clean).abs().mean(dim=(1, 2, 3)).min() > 0.3


def test_without_redraw_the_training_pairs_are_drawn_once():
    fixed = DATASETS.create("digits_av", seed=3, max_train=300, redraw=False)
    redrawn = DATASETS.create("digits_av", seed=3, max_train=300)
    np.testing.assert_array_equal(fixed.train.clip_index, redrawn.train.clip_index)   # epoch 0: the same draw
    audio0, video0 = fixed.train.inputs["audio"].clone(), fixed.train.inputs["video"].clone()
    fixed.train.set_epoch(5)
    assert torch.equal(fixed.train.inputs["audio"], audio0) and torch.equal(fixed.train.inputs["video"], video0)
    redrawn.train.set_epoch(5)
    assert not torch.equal(redrawn.train.inputs["audio"], audio0)


@pytest.mark.parametrize("split, other, voices", [("test", "val", digits_av.TEST_VOICES),
                                                  ("val", "test", digits_av.VAL_VOICES)])
def test_repeats_render_each_held_out_image_again(split, other, voices):
    once = DATASETS.create("digits_av", seed=4, max_train=100)
    thrice = DATASETS.create("digits_av", seed=4, max_train=100, **{f"{split}_repeats": 3})
    x, x1 = getattr(thrice, split), getattr(once, split)
    n = len(x1)
    assert len(x) == 3 * n and len(getattr(thrice, other)) == len(getattr(once, other))
    assert len(thrice.train) == len(once.train)
    assert torch.equal(x.targets, x1.targets.repeat(3))
    np.testing.assert_array_equal(x.image_index, np.tile(x1.image_index, 3))
    video = x.inputs["video"]                             # (3N, 1, T, S, S): the same images, new noise
    assert not torch.equal(video[:n], video[n:2 * n])
    assert (x.clip_index[:n] != x.clip_index[n:2 * n]).mean() > 0.5
    assert np.isin(x.bank.voices[x.clip_index], voices).all()


def test_split_seed_fixes_the_held_out_data_across_seeds():
    a, b = (DATASETS.create("digits_av", seed=s, max_train=200, split_seed=7) for s in (1, 2))
    for split in ("val", "test"):                         # the same images, pairs and renderings for every seed
        x, y = getattr(a, split), getattr(b, split)
        np.testing.assert_array_equal(x.image_index, y.image_index)
        np.testing.assert_array_equal(x.clip_index, y.clip_index)
        assert torch.equal(x.inputs["video"], y.inputs["video"])
    np.testing.assert_array_equal(a.train.image_index, b.train.image_index)   # the same training images ...
    assert (a.train.clip_index != b.train.clip_index).mean() > 0.5             # ... paired by the seed
    plain, same = (DATASETS.create("digits_av", seed=7, max_train=200, **kw) for kw in ({}, {"split_seed": 7}))
    assert torch.equal(plain.test.inputs["audio"], same.test.inputs["audio"])
    assert torch.equal(plain.train.inputs["video"], same.train.inputs["video"])


def test_held_out_splits_can_have_their_own_noise_audio_fraction():
    plain = DATASETS.create("digits_av", seed=5, max_train=300, audio_uninformative_frac=0.0)
    failing = DATASETS.create("digits_av", seed=5, max_train=300, audio_uninformative_frac=0.0,
                              heldout_audio_uninformative_frac=0.2)
    assert not failing.train.uninformative.any()
    assert torch.equal(plain.train.inputs["audio"], failing.train.inputs["audio"])
    for split in ("val", "test"):
        x, y = getattr(plain, split), getattr(failing, split)
        assert not x.uninformative.any() and y.uninformative.mean() == pytest.approx(0.2, abs=0.01)
        assert torch.equal(x.inputs["video"], y.inputs["video"])            # the frames do not change
        same = torch.from_numpy(~y.uninformative)
        assert torch.equal(x.inputs["audio"][same], y.inputs["audio"][same])  # only the failing pairs' audio does
        assert not torch.equal(x.inputs["audio"][~same], y.inputs["audio"][~same])


def test_speed_jitter_changes_train_audio_only():
    plain = DATASETS.create("digits_av", seed=2, max_train=100)
    fast = DATASETS.create("digits_av", seed=2, max_train=100, audio_speed_jitter=0.1)

    def raw(split):                                       # undo the (train-statistics) standardisation
        mean, std = split.audio_stats
        return split.inputs["audio"] * std + mean

    np.testing.assert_array_equal(plain.train.clip_index, fast.train.clip_index)
    torch.testing.assert_close(raw(plain.val), raw(fast.val), rtol=0, atol=1e-4)
    informative = torch.from_numpy(~plain.train.uninformative)
    diff = (raw(plain.train) - raw(fast.train))[informative].abs().mean(dim=(1, 2, 3))  # (n,)
    assert (diff > 0.05).float().mean() > 0.9


def test_change_speed():
    t = torch.arange(8000, dtype=torch.float32)
    tone = torch.sin(2 * torch.pi * 500 * t / 8000).expand(2, -1)  # 500 Hz at 8 kHz
    out = digits_av.change_speed(tone, torch.tensor([1.0, 1.1]))
    assert torch.equal(out[0], tone[0])
    assert torch.fft.rfft(out[1]).abs().argmax().item() == 550    # 10 % faster -> 550 Hz


@pytest.mark.parametrize("knob, value", [
    ("image_noise", -0.1), ("audio_uninformative_frac", 1.0), ("audio_uninformative_frac", -0.2),
    ("audio_speed_jitter", 0.5), ("audio_snr_db", float("nan")), ("frames", 0), ("image_size", 4),
    ("max_shift", -1), ("max_train", 0), ("redraw", 1), ("test_repeats", 0), ("test_repeats", 1.5), ("split_seed", -1),
    ("val_repeats", 0), ("val_repeats", True),
    ("heldout_audio_uninformative_frac", 1.0),
    ("val_voices", ("nobody",)), ("test_voices", ()),
])
def test_bad_knob_raises(knob, value):
    with pytest.raises(ValueError, match=knob):
        DATASETS.create("digits_av", seed=0, **{knob: value})


def test_overlapping_voices_raise():
    with pytest.raises(ValueError, match="disjoint"):
        DATASETS.create("digits_av", seed=0, val_voices=("m5",), test_voices=("m5", "f4"))


def test_missing_or_broken_bank(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m data_scripts.make_spoken_digits") as err:
        DATASETS.create("digits_av", seed=0, root=str(tmp_path))
    assert str(tmp_path / "spoken_digits.npz") in str(err.value)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(FileNotFoundError, match="make_spoken_digits"):
        DATASETS.create("digits_av", seed=0, root=str(broken))


def test_root_override_reads_a_copy(tmp_path):
    (tmp_path / "spoken_digits.npz").write_bytes(BANK.read_bytes())
    s = DATASETS.create("digits_av", seed=0, root=str(tmp_path), max_train=50)
    assert s.sizes()["train"] == 50


def test_loader_workers_see_the_epochs_new_pairing():
    """set_epoch in the main process must reach DataLoader workers (no persistent copies)."""
    from mmbal.data import DATASETS, make_loader

    train = DATASETS.create("digits_av", seed=0, max_train=64).train
    loader = make_loader(train, batch_size=64, shuffle=False, seed=0, num_workers=1)
    audio = []
    for epoch in (0, 1):
        train.set_epoch(epoch)
        audio.append(next(iter(loader))["audio"])
        assert torch.equal(audio[-1], torch.stack([train[i]["audio"] for i in range(len(train))]))
    assert not torch.equal(audio[0], audio[1])
