"""UCF101: data_scripts.ucf101 on a tiny fabricated folder (.avi with and without audio + ucfTrainTestlist)."""
import json
import shutil

import numpy as np
import pytest

from data_scripts import fabricate, ucf101
from mmbal.data import DATASETS
from mmbal.data.cached import open_cache
from mmbal.data.real import UCF101_SPLIT_OF_SEED

OPTS = ["--splits", "from-data", "--frame-size", "24x32", "--workers", "0", "--no-progress"]


def run(*argv) -> int:
    return ucf101.main(ucf101.SPEC, [str(a) for a in argv])


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf") / "raw"
    fabricate.fabricate_ucf101(root)   # ApplyEyeMakeup (no audio), Basketball, Drumming; groups g01-g04
    return root


@pytest.fixture(scope="module")
def cache(raw):
    out = raw.parent / "cache"
    assert run("all", "--raw", raw, "--cache", out, *OPTS) == 0
    return out


def test_only_classes_with_audio_survive(cache):
    c = open_cache(cache, dataset="ucf101")
    assert c.meta["class_names"] == ["Basketball", "Drumming"]          # determined from the data
    assert {r["label_name"] for r in c.index} == {"Basketball", "Drumming"}
    assert [r["label"] for r in c.index] == [0, 0, 0, 1, 1, 1]
    skipped = (cache / "skipped.csv").read_text()
    assert skipped.count("class has no clip with an audio track") == 4
    # MLB drops clips with fewer than 4 frames at 1 fps: the 2.5-s clips of g04
    assert "v_Basketball_g04_c01,prepare," in skipped and "v_Drumming_g04_c01,prepare," in skipped


def test_cache_shapes_dtypes_and_values(cache):
    c = open_cache(cache, dataset="ucf101")
    assert c.frames.shape == (8, 4, 24, 32, 3) and c.frames.dtype == np.uint8
    assert c.audio.shape == (8, 257, 136) and c.audio.dtype == np.float16
    r = c.index[0]
    np.testing.assert_allclose(c.frames[r["row"], :, :, :8].reshape(4, -1).mean(axis=1), [8, 68, 128, 188], atol=4)
    peak = int(np.asarray(c.audio[r["row"]], np.float32).mean(axis=1).argmax())
    assert peak == round(fabricate.class_pitch(1) * 512 / 16000)          # Basketball is class 2 of classInd


def test_validation_is_group_disjoint_and_from_the_training_groups(cache):
    splits = json.loads((cache / "splits.json").read_text())
    fold = splits["folds"]["1"]
    group = lambda clip: clip.rsplit("_", 1)[0]                             # v_Class_gXX
    assert not {group(c) for c in fold["train"]} & {group(c) for c in fold["val"]}
    assert {c.split("_")[2] for c in fold["test"]} == {"g01"}               # the official test list
    assert len(fold["val"]) == 2 and all(c.split("_")[2] != "g01" for c in fold["val"])


def test_committed_val_groups_follow_the_rule():
    committed = json.loads(ucf101.VAL_FILE.read_text())["splits"]
    for k, test_groups in ucf101.TEST_GROUPS.items():
        assert len(committed[k]) == 101
        for groups in committed[k].values():
            assert len(groups) == 2 and not {int(g[1:]) for g in groups} & set(test_groups)
    assert ucf101.cmd_splits(type("A", (), {"write": False})()) == 0


def test_committed_val_groups_that_do_not_fit_are_refused(raw, tmp_path, capsys):
    opts = [o if o != "from-data" else "committed" for o in OPTS]
    assert run("prepare", "--raw", raw, "--cache", tmp_path / "c", *opts) == 1
    assert "use --splits from-data" in capsys.readouterr().err


def test_wrong_layout_is_named(raw, tmp_path, capsys):
    bad = tmp_path / "raw"
    shutil.copytree(raw / "UCF-101", bad / "UCF-101")
    assert run("verify", "--raw", bad, "--cache", tmp_path / "c") == 2
    assert "missing ucfTrainTestlist/" in capsys.readouterr().err


def test_loader_and_the_mlb_bgr_option(cache):
    splits = DATASETS.create("ucf101", seed=109, root=str(cache), image_size=16)
    assert splits.sizes() == {"train": 2, "val": 2, "test": 2} and splits.num_classes == 2
    rgb = splits.test[0]["video"]
    assert rgb.shape == (3, 4, 16, 16)
    quirk = DATASETS.create("ucf101", seed=109, root=str(cache), image_size=16, mlb_bgr_quirk=True).test[0]["video"]
    assert quirk.max() > 50 > rgb.max()                                     # 0-255 values, as MLB's loader
    with pytest.raises(ValueError, match="available folds: 1"):
        DATASETS.create("ucf101", seed=19, root=str(cache))                   # seed 19 -> split 2, not prepared
    assert UCF101_SPLIT_OF_SEED == {109: "1", 19: "2", 337: "3"} and ucf101.SPLIT_SEEDS == {"1": 109, "2": 19, "3": 337}
