"""AVE: data_scripts.ave on a tiny fabricated folder (AVE/*.mp4, Annotations.txt, official-style lists)."""
import hashlib
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch

from data_scripts import ave, fabricate
from mmbal.data import DATASETS
from mmbal.data.cached import open_cache
from mmbal.data.real import AVE_CLASSES

OPTS = ["--frame-size", "24x32", "--workers", "0", "--no-progress"]


def run(*argv) -> int:
    return ave.main(ave.SPEC, [str(a) for a in argv])


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("ave") / "raw"
    fabricate.fabricate_ave(root)      # 9 videos of 4 s, 3 classes; train also lists test video #8
    return root


@pytest.fixture(scope="module")
def cache(raw):
    out = raw.parent / "cache"
    assert run("all", "--raw", raw, "--cache", out, *OPTS) == 0
    return out


def test_overlapping_train_video_is_removed_and_reported(raw, cache, capsys):
    assert run("verify", "--raw", raw, "--cache", cache.parent / "v") == 0
    out = capsys.readouterr().out
    overlap = fabricate.AVE_FAKE_IDS[8]
    assert f"removed 1 train videos that also occur in val/test: {overlap}" in out
    splits = json.loads((cache / "splits.json").read_text())["folds"]["0"]
    assert [len(splits[p]) for p in ("train", "val", "test")] == [5, 2, 2]
    assert not {c.split("_")[0] for c in splits["train"]} & {c.split("_")[0] for c in splits["val"] + splits["test"]}
    assert f"{overlap}_2_4,protocol,train video also in the val or test list" in (cache / "skipped.csv").read_text()


def test_cache_shapes_and_the_event_segment(cache):
    c = open_cache(cache, dataset="ave")
    assert c.frames.shape == (9, 4, 24, 32, 3) and c.frames.dtype == np.uint8
    assert c.audio.shape == (9, 257, 1004) and c.audio.dtype == np.float16
    assert c.meta["class_names"] == AVE_CLASSES and len(AVE_CLASSES) == 28
    assert AVE_CLASSES[1] == "Male speech, man speaking" and AVE_CLASSES[27] == "Mandolin"
    for r in c.index:
        start = int(r["clip"].split("_")[1])
        levels = c.frames[r["row"], :, :, :8].reshape(4, -1).mean(axis=1)
        # frames come from the segment only: the first is the first frame of second `start`
        assert abs(levels[0] - fabricate.frame_level(10 * start)) < 4 and np.all(np.diff(levels) > 0)
        # PSD of a (300 + 200 k) Hz tone at 16 kHz peaks at bin f * 512 / 16000
        peak = int(np.asarray(c.audio[r["row"]], np.float32).mean(axis=1).argmax())
        assert peak == round(fabricate.class_pitch(r["label"]) * 512 / 16000)


def test_min_saved_4_keeps_true_one_fps_frames(raw, tmp_path):
    assert run("prepare", "--raw", raw, "--cache", tmp_path / "c", "--min-saved", "4", *OPTS) == 0
    index = open_cache(tmp_path / "c", dataset="ave").index
    full = [r for r in index if r["clip"].endswith("_0_4")]       # a 0-4 s segment spans 4 seconds: no top-up
    assert full and all(r["n_one_fps"] == 4 for r in full)


def test_missing_video_and_bad_lines_are_named(raw, tmp_path, capsys):
    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    (bad / "AVE" / f"{fabricate.AVE_FAKE_IDS[0]}.mp4").unlink()
    with open(bad / "trainSet.txt", "a") as f:
        f.write("Didgeridoo&zzzzzzzzzzz&good&0&10\n")
    assert run("all", "--raw", bad, "--cache", tmp_path / "c", *OPTS) == 0
    out = capsys.readouterr().out
    assert f"{fabricate.AVE_FAKE_IDS[0]}.mp4: missing" in out and "unknown category 'Didgeridoo'" in out
    (bad / "valSet.txt").unlink()
    assert run("verify", "--raw", bad, "--cache", tmp_path / "c") == 2
    assert "missing valSet.txt" in capsys.readouterr().err


def test_loader(cache):
    splits = DATASETS.create("ave", seed=337, root=str(cache), image_size=16)
    assert splits.sizes() == {"train": 5, "val": 2, "test": 2} and splits.num_classes == 28
    s = splits.train[0]
    assert s["audio"].shape == (1, 257, 1004) and s["video"].shape == (3, 4, 16, 16)
    assert s["label"].dtype == torch.int64


def test_the_git_lfs_hint_names_a_download_that_replaces_the_pointers(raw, tmp_path, capsys):
    """An AVE folder whose videos are Git-LFS pointers: verify's hint is a command that fetches the media
    (here from a local copy of the archive, as AVE_Dataset.zip unpacks: one top folder)."""
    zipped = tmp_path / "AVE_Dataset.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for f in sorted(p for p in raw.rglob("*") if p.is_file()):
            z.write(f, f"AVE_Dataset/{f.relative_to(raw)}")
    checkout = tmp_path / "raw"
    shutil.copytree(raw, checkout)
    video = checkout / "AVE" / f"{fabricate.AVE_FAKE_IDS[3]}.mp4"
    video.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 1000000\n")
    assert run("verify", "--raw", checkout, "--cache", tmp_path / "c", "--no-progress") == 0
    hint = f"python -m data_scripts.ave download --raw {checkout}"
    assert f"hint: fetch the media of the Git-LFS pointers with: {hint}" in capsys.readouterr().out
    assert run(*hint.split()[3:], "--archive", zipped, "--no-progress") == 0
    out = capsys.readouterr().out
    digest = hashlib.sha256(zipped.read_bytes()).hexdigest()
    assert "nothing to download" not in out and f"this copy has sha256 {digest}" in out
    assert video.read_bytes() == (raw / "AVE" / video.name).read_bytes() and not (checkout / "AVE_Dataset").exists()
    assert run("verify", "--raw", checkout, "--cache", tmp_path / "c", "--no-progress") == 0
    assert "Git-LFS" not in capsys.readouterr().out
    assert run("download", "--raw", checkout, "--archive", zipped) == 0                 # media complete: a no-op
    assert "AVE already unpacked" in capsys.readouterr().out
