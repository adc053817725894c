"""The cache format does not change: a cache written by the earlier preparation code (tests/fixtures/
cremad_cache_v1, six fabricated clips, one per emotion and actor) opens, splits and trains, and the
current writer reproduces it from the same fabricated clips."""
import json
from pathlib import Path

import numpy as np
import torch

from data_scripts import cremad, fabricate
from mmbal.cli import main
from mmbal.data import DATASETS
from mmbal.data.cached import CACHE_VERSION, open_cache
from mmbal.data.real import CREMAD_CLASSES

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "cremad_cache_v1"


def test_the_old_cache_opens_with_its_shapes_and_labels():
    c = open_cache(FIXTURE, dataset="cremad")
    assert "files" not in c.meta                  # written before the integrity records: checked by its shapes
    assert c.meta["version"] == CACHE_VERSION == 1 and c.meta["class_names"] == CREMAD_CLASSES
    assert c.frames.shape == (6, 3, 24, 32, 3) and c.frames.dtype == np.uint8
    assert c.audio.shape == (6, 257, 188) and c.audio.dtype == np.float16
    assert [(r["clip"], r["label"], r["group"]) for r in c.index] == [
        (f"{1001 + k}_DFA_{e}_XX", k, str(1001 + k)) for k, e in enumerate(fabricate.CREMAD_EMOTIONS)]
    for r in c.index:      # the tone of class k (300 + 200 k Hz) peaks in STFT bin f * 512 / 22050
        peak = int(np.asarray(c.audio[r["row"]], np.float32).mean(axis=1).argmax())
        assert peak == round(fabricate.class_pitch(r["label"]) * 512 / 22050)


def test_the_old_cache_gives_the_folds_of_mlbs_seeds():
    actor_folds = json.loads((FIXTURE / "splits.json").read_text())["actor_folds"]
    for seed, fold in ((109, "0"), (19, "1"), (337, "2")):
        splits = DATASETS.create("cremad", seed=seed, root=str(FIXTURE), image_size=16)
        assert splits.sizes() == {"train": 4, "val": 1, "test": 1} and splits.num_classes == 6
        assert splits.input_shapes() == {"audio": (1, 257, 188), "video": (3, 3, 16, 16)}
        for part in ("train", "val", "test"):       # actor 100k speaks emotion k - 1 only
            labels = getattr(splits, part).labels().tolist()
            assert labels == [int(a) - 1001 for a in actor_folds[fold][part]]
        sample = splits.test[0]
        cached = open_cache(FIXTURE, dataset="cremad").audio[int(splits.test.rows[0])]
        torch.testing.assert_close(sample["audio"][0], torch.from_numpy(np.asarray(cached, np.float32)))
        assert sample["video"].shape == (3, 3, 16, 16) and sample["label"].item() == labels[0]


def test_the_old_cache_trains(tmp_path):
    out = tmp_path / "run.json"
    assert main(["train", "--dataset", "cremad", "--data-root", str(FIXTURE), "--data-opt", "image_size=16",
                 "--encoder", "small_cnn", "--balancer", "mlb", "--epochs", "2", "--batch-size", "2",
                 "--seed", "109", "--no-progress", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["data"]["sizes"] == {"train": 4, "val": 1, "test": 1}
    assert len(record["history"]) == 2 and np.isfinite(record["history"][-1]["train"]["loss/mm"])


def test_the_writer_reproduces_the_old_cache(tmp_path):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    for actor, emotion in zip(range(1001, 1007), fabricate.CREMAD_EMOTIONS):
        fabricate.fabricate_cremad(raw, actors=[actor], emotions=(emotion,))
    assert cremad.main(cremad.SPEC, ["prepare", "--raw", str(raw), "--cache", str(cache), "--folds", "from-data",
                                     "--frame-size", "24x32", "--workers", "0", "--no-progress"]) == 0
    for name in ["index.csv", "skipped.csv", "audio.npy"]:
        assert (cache / name).read_bytes() == (FIXTURE / name).read_bytes(), name
    new_meta, old_meta = (json.loads((c / "meta.json").read_text()) for c in (cache, FIXTURE))
    # meta.json gains the integrity records and the rebuild command; everything else is as before
    assert set(new_meta) - set(old_meta) == {"files", "rebuild"}
    assert {k: new_meta[k] for k in old_meta} == old_meta
    assert new_meta["rebuild"] == (f"python -m data_scripts.cremad all --raw {raw.resolve()} "
                                   "--frame-size 24x32 --folds from-data")
    new_splits, old_splits = (json.loads((c / "splits.json").read_text()) for c in (cache, FIXTURE))
    assert {k: v for k, v in new_splits.items() if k != "rule"} == {k: v for k, v in old_splits.items() if k != "rule"}
    assert "(1001-10present)" in old_splits["rule"]              # the old rule text was garbled ...
    assert "the 6 sorted ids of the actors with a usable clip (1001, 1002, 1003, 1004, 1005, 1006), cut into 5 " \
           "blocks of 1;" in new_splits["rule"] and "other 4 actors" in new_splits["rule"]   # ... now it is right
    new, old = np.load(cache / "frames.npy"), np.load(FIXTURE / "frames.npy")
    assert new.shape == old.shape and new.dtype == old.dtype
    # identical bytes with the PyAV that wrote the fixture; another video encoder may move a few levels
    assert np.abs(new.astype(int) - old.astype(int)).max() <= 2
