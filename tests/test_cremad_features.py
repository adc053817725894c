"""CREMA-D features for the Conformer setup (data_scripts.cremad features) on fabricated clips, with small randomly
initialised stand-ins for wav2vec 2.0, the face detector and EfficientNet-B2 (nothing is downloaded); the sequence
Conformer that reads them (mmbal.models.sequence); and `mmbal train` on the feature cache."""
import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from data_scripts import cremad, cremad_features as cf, fabricate
from mmbal import cli
from mmbal.data import DATASETS
from mmbal.data.cached import CacheError, open_cache
from mmbal.models import ENCODERS

HOP, AUDIO_DIM, FACE_DIM = 320, 8, 12        # like wav2vec 2.0: one frame per 320 samples (50 frames/s at 16 kHz)
NO_FACE = "1003_DFA_SAD_XX"                   # its video is replaced by two dark frames: no face anywhere
FOLDS = ("0", "1")


def fake_detector(frame: np.ndarray):
    """A 'face' (the right half) when the left half is brighter than 20: fabricated frames 0-2 have none."""
    h, w, _ = frame.shape
    return (w // 2, 0, w - 1, h - 1) if frame[:, : w // 2].mean() > 20 else None


class Counting:
    """Random stand-in models, counting the calls so a test can tell what a rerun recomputed."""

    def __init__(self):
        torch.manual_seed(0)
        self.calls = {"audio": 0, "detector": 0, "embedder": 0}
        self.conv = nn.Conv1d(1, AUDIO_DIM, kernel_size=HOP, stride=HOP)                  # (1, 1, N) -> (1, 8, T)
        self.embed = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, FACE_DIM))  # -> (B, 12)

    def audio_net(self, wave):
        self.calls["audio"] += 1
        return self.conv(wave[None, None])[0].T                                                     # (T, 8)

    def models(self) -> cf.Models:
        def count(kind, fn):
            return lambda device: (lambda *a: (self.calls.__setitem__(kind, self.calls[kind] + 1), fn(*a))[1])
        return cf.Models(audio=lambda device: self.audio_net, detector=count("detector", fake_detector),
                         embedder=count("embedder", self.embed))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    raw = tmp_path_factory.mktemp("cremad_features") / "raw"
    fabricate.fabricate_cremad(raw)           # 36 clips: 6 actors x 6 emotions, 1.5-3.5 s, 10 fps, 16 kHz
    out = raw.parent / "cache"
    assert cremad.main(cremad.SPEC, ["all", "--raw", str(raw), "--cache", str(out), "--folds", "from-data",
                                     "--frame-size", "24x32", "--workers", "0", "--no-progress"]) == 0
    fabricate.write_video(raw / "VideoFlash" / f"{NO_FACE}.flv", seconds=0.2, fps=10, vcodec="flv")  # 2 dark frames
    return out


@pytest.fixture(scope="module")
def extracted(cache):
    stand_ins = Counting()
    meta = cf.extract(cache, cache.parent / "raw", models=stand_ins.models(), folds=FOLDS, device="cpu", progress=False)
    return cache, meta, stand_ins


def test_arrays_per_clip_and_modality(extracted):
    cache, meta, _ = extracted
    feats, c = cache / "features", open_cache(cache, dataset="cremad")
    for row in c.index:
        wave = cf.load_wave(cache.parent / "raw" / "AudioWAV" / f"{row['clip']}.wav")
        frames = cf.read_frames(cache.parent / "raw" / "VideoFlash" / f"{row['clip']}.flv")
        for f in FOLDS:
            path = feats / "audio" / f"fold{f}" / f"{row['clip']}.npy"
            if row["clip"] == NO_FACE:                                   # left out: no audio features either
                assert not path.exists()
                continue
            a = np.load(path)
            assert a.shape == (len(wave) // HOP, AUDIO_DIM) and a.dtype == np.float16
        v = np.load(feats / "video" / f"{row['clip']}.npy")
        expected = 0 if row["clip"] == NO_FACE else len(frames) - 3        # frames 0-2 hold no face
        assert v.shape[0] == expected and (v.shape[1] == FACE_DIM or expected == 0)
    assert meta["folds"] == list(FOLDS) and meta["clips"] == 36
    assert meta["max_frames"] == {"audio": 3.5 * 16000 // HOP, "video": 35 - 3}


def test_statistics_come_from_the_training_fold_only(extracted):
    cache, _, stand_ins = extracted
    feats, splits = cache / "features", open_cache(cache, dataset="cremad").splits["folds"]
    raw = cache.parent / "raw"
    for f in FOLDS:
        train = [c for c in splits[f]["train"] if c != NO_FACE]         # MLB computes them without no-face clips
        waves = np.concatenate([cf.load_wave(raw / "AudioWAV" / f"{c}.wav").numpy() for c in train]).astype(float)
        got = json.loads((feats / f"wave_stats_fold{f}.json").read_text())
        assert got["mean"] == pytest.approx(waves.mean(), abs=1e-9)
        assert got["std"] == pytest.approx(waves.std(), rel=1e-6)
        faces = np.concatenate([np.load(feats / "video" / f"{c}.npy") for c in train]).astype(float)
        stats = np.load(feats / f"face_stats_fold{f}.npy")
        np.testing.assert_allclose(stats, np.stack([faces.mean(0), faces.std(0)]), rtol=1e-5, atol=1e-6)
        clip = splits[f]["test"][0]                           # a test clip: standardised with the train statistics
        wave = (cf.load_wave(raw / "AudioWAV" / f"{clip}.wav") - got["mean"]) / got["std"]
        with torch.no_grad():
            want = stand_ins.audio_net(wave).numpy()
        np.testing.assert_allclose(np.load(feats / "audio" / f"fold{f}" / f"{clip}.npy"), want, rtol=2e-3, atol=2e-3)
    s0, s1 = (json.loads((feats / f"wave_stats_fold{f}.json").read_text()) for f in FOLDS)
    assert s0["std"] != s1["std"]                             # other training actors, other statistics


def test_clip_without_a_face_is_named_and_left_out(extracted):
    cache, meta, _ = extracted
    rows = list(csv.DictReader(open(cache / "features" / "no_face.csv")))
    assert [r["clip"] for r in rows] == [NO_FACE] == meta["no_face"]
    assert rows[0]["frames"] == "2" and "left out" in rows[0]["reason"]
    with pytest.warns(UserWarning, match="1 clips without a detected face"):
        splits = DATASETS.create("cremad", seed=0, root=str(cache), fold="0", inputs="features")
    named = [c for part in (splits.train, splits.val, splits.test) for c in part.clips]
    assert NO_FACE not in named and len(named) == 35


def test_reader_pads_masks_standardises_and_cuts(extracted):
    cache, meta, _ = extracted
    with pytest.warns(UserWarning):
        splits = DATASETS.create("cremad", seed=0, root=str(cache), fold="1", inputs="features", max_frames=20)
    assert splits.input_shapes() == {"audio": (meta["max_frames"]["audio"], AUDIO_DIM), "video": (20, FACE_DIM)}
    stats = np.load(cache / "features" / "face_stats_fold1.npy")
    for i, clip in enumerate(splits.train.clips[:6]):
        sample, raw_v = splits.train[i], np.load(cache / "features" / "video" / f"{clip}.npy").astype(np.float32)
        n_a = len(np.load(cache / "features" / "audio" / "fold1" / f"{clip}.npy"))
        real = sample["audio"].abs().amax(-1) > 0
        assert real.tolist() == [True] * n_a + [False] * (len(real) - n_a)       # zero frames = padding, at the end
        n_v = min(20, len(raw_v))
        np.testing.assert_allclose(sample["video"][:n_v].numpy(), (raw_v[:n_v] - stats[0]) / stats[1], rtol=1e-5)
        assert not sample["video"][n_v:].any() and sample["label"] == splits.train.labels()[i]
    with pytest.raises(CacheError, match="--fold-ids 2"):
        DATASETS.create("cremad", seed=0, root=str(cache), fold="2", inputs="features")


def test_a_rerun_only_completes_what_is_missing(extracted):
    cache, meta, _ = extracted
    feats = cache / "features"
    again = Counting()
    assert cf.extract(cache, cache.parent / "raw", models=again.models(), folds=FOLDS, device="cpu",
                      progress=False)["max_frames"] == meta["max_frames"]
    assert again.calls == {"audio": 0, "detector": 0, "embedder": 0}
    clip = open_cache(cache, dataset="cremad").index[0]["clip"]
    (feats / "video" / f"{clip}.npy").unlink()
    (feats / "audio" / "fold1" / f"{clip}.npy").unlink()
    (feats / "meta.json").unlink()                                               # as if stopped before the end
    cf.extract(cache, cache.parent / "raw", models=again.models(), folds=FOLDS, device="cpu", progress=False)
    assert again.calls["audio"] == 1 and again.calls["detector"] == len(cf.read_frames(
        cache.parent / "raw" / "VideoFlash" / f"{clip}.flv"))
    assert json.loads((feats / "meta.json").read_text()) == meta


def test_features_of_other_splits_are_refused_then_recomputed(extracted):
    cache, meta, _ = extracted
    feats, again = cache / "features", Counting()
    (feats / "meta.json").write_text(json.dumps(meta | {"splits_sha256": "folds of an earlier prepare"}))
    with pytest.raises(CacheError, match="--fold-ids 0"):
        DATASETS.create("cremad", seed=0, root=str(cache), fold="0", inputs="features")
    assert cf.extract(cache, cache.parent / "raw", models=again.models(), folds=FOLDS, device="cpu",
                      progress=False) == meta
    assert again.calls["audio"] == len(FOLDS) * 35 and again.calls["detector"] == 0   # faces do not depend on folds


def test_face_crop_is_vavls_square_around_the_box():
    frame = np.zeros((100, 120, 3), np.uint8)
    frame[40:60, 50:70] = 200                                                    # a 20 x 20 'face'
    crop = cf.face_crop(frame, (50, 40, 69, 59), size=55)                        # side 1.1 * 1.25 * 19 = 26
    assert crop.shape == (3, 55, 55) and crop[:, 27, 27].tolist() == [200, 200, 200]
    assert crop[:, 1, 1].tolist() == [0, 0, 0]                                   # the margin around the face
    corner = cf.face_crop(frame, (0, 0, 19, 19), size=55)                        # partly outside: black there
    assert corner[:, 0, 0].tolist() == [0, 0, 0]


def sequence_encoder(**kw):
    torch.manual_seed(0)
    return ENCODERS.create("sequence_conformer", modality="audio", input_shape=(9, 16), d_model=32, num_heads=4,
                           ffn_dim=64, num_layers=2, **kw).eval()


def test_sequence_conformer_attends_within_each_clip_and_pools_real_frames():
    enc, x = sequence_encoder(), torch.randn(4, 9, 16)
    with torch.no_grad():
        batch, alone = enc(x), enc(x[2:3])
    torch.testing.assert_close(batch[2], alone[0], atol=1e-5, rtol=1e-5)         # other clips change nothing
    enc1 = sequence_encoder(kernel_size=1)                   # no conv across time: the padding check is exact
    x[0, 5:] = 0
    with torch.no_grad():
        padded, short = enc1(x[:1]), enc1(x[:1, :5])
    torch.testing.assert_close(padded[0, :5], short[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.mean(1), short.mean(1), atol=1e-5, rtol=1e-5)   # the model's pooling
    assert enc.conv.weight.shape == (50, 16, 1) and enc.conv.bias is None and len(enc.conformer.conformer_layers) == 2
    with pytest.raises(ValueError, match="inputs=features"):
        ENCODERS.create("sequence_conformer", modality="video", input_shape=(3, 3, 24, 32))


def test_train_cli_on_the_feature_cache(extracted, tmp_path, one_thread):
    cache, _, _ = extracted
    out = tmp_path / "run.json"
    with pytest.warns(UserWarning, match="without a detected face"):
        code = cli.main(["train", "--dataset", "cremad", "--data-root", str(cache), "--data-opt", "inputs=features",
                         "--data-opt", "fold=0", "--encoder", "sequence_conformer", "--encoder-opt", "d_model=32",
                         "--encoder-opt", "num_heads=4", "--encoder-opt", "ffn_dim=64", "--encoder-opt", "num_layers=1",
                         "--batch-size", "8", "--epochs", "2", "--seed", "0", "--out", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["config"]["model"]["encoder"] == "sequence_conformer"
    assert sum(record["data"]["sizes"].values()) == 35                         # the clip without a face is left out
    assert len(record["history"]) == 2 and 0.0 <= record["test"]["mm"]["accuracy"] <= 1.0


def test_features_help_explains_the_step(capsys):
    with pytest.raises(SystemExit) as done:
        cremad.main(cremad.SPEC, ["features", "--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0 and "wav2vec2-large-robust" in text and "no_face.csv" in text
    assert cremad.main(cremad.SPEC, ["features", "--cache", "/nonexistent/cache"]) == 1     # one line, no trace
