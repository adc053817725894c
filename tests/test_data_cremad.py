"""CREMA-D: data_scripts.cremad on a tiny fabricated folder in the real layout (AudioWAV/*.wav, VideoFlash/*.flv)."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from data_scripts import cremad, fabricate
from mmbal.data import DATASETS
from mmbal.data.cached import CacheError, open_cache
from mmbal.data.real import CREMAD_CLASSES

OPTS = ["--folds", "from-data", "--frame-size", "24x32", "--workers", "0", "--no-progress"]
FILES = ["frames.npy", "audio.npy", "index.csv", "splits.json", "skipped.csv", "meta.json"]


def run(*argv) -> int:
    return cremad.main(cremad.SPEC, [str(a) for a in argv])


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("cremad") / "raw"
    fabricate.fabricate_cremad(root)          # 6 actors x 6 emotions, 1.5-3.5 s, 10 fps, 16 kHz
    return root


@pytest.fixture(scope="module")
def cache(raw):
    out = raw.parent / "cache"
    assert run("all", "--raw", raw, "--cache", out, *OPTS) == 0
    return out


def test_cache_has_the_mlb_shapes_dtypes_and_values(cache):
    c = open_cache(cache, dataset="cremad")
    assert c.frames.shape == (36, 3, 24, 32, 3) and c.frames.dtype == np.uint8
    assert c.audio.shape == (36, 257, 188) and c.audio.dtype == np.float16
    assert c.meta["class_names"] == CREMAD_CLASSES and c.meta["n_clips"] == 36
    short = {f"{1001 + a}_DFA_{e}_XX" for a in range(6) for k, e in enumerate(fabricate.CREMAD_EMOTIONS) if (a + k) % 3 == 0}
    for r in c.index:
        emotion = r["clip"].split("_")[2]
        assert r["label"] == cremad.EMOTIONS[emotion] and r["group"] == r["clip"][:4]
        # the tone of class k is 300 + 200 k Hz; at 22,050 Hz / 512 bins its STFT bin is f / 43.07
        peak_bin = int(np.asarray(c.audio[r["row"]], dtype=np.float32).mean(axis=1).argmax())
        assert peak_bin == round(fabricate.class_pitch(r["label"]) * 512 / 22050)
        # at 10 fps the first frames of seconds 0, 1, 2 are frames 0, 10, 20 (grey 8, 68, 128, left quarter);
        # 1.5-s clips have 2 such frames and get one seeded extra frame (MLB's top-up to 3)
        left = c.frames[r["row"], :, :, :8].reshape(3, -1).mean(axis=1)
        assert abs(left[0] - 8) < 4
        if r["n_one_fps"] == 3:
            np.testing.assert_allclose(left, [8, 68, 128], atol=4)
        else:
            assert r["clip"] in short and any(abs(v - 68) < 4 for v in left[1:])
    clip = next(x for x in cremad.scan(cache.parent / "raw").clips if x.clip == c.index[0]["clip"])
    frames, spec, _ = cremad.process(clip, cremad.default_config(frame_size=(24, 32)))
    np.testing.assert_array_equal(frames, c.frames[0])
    np.testing.assert_allclose(spec, c.audio[0].astype(np.float32), atol=0.02)   # float16 storage


def test_folds_are_actor_disjoint(cache):
    splits = json.loads((cache / "splits.json").read_text())["folds"]
    tests = []
    for fold, parts in splits.items():
        actors = {p: {clip[:4] for clip in ids} for p, ids in parts.items()}
        assert not actors["train"] & actors["val"] and not actors["train"] & actors["test"] and not actors["val"] & actors["test"]
        assert len(set().union(*actors.values())) == 6
        tests.append(actors["test"])
    assert len(set().union(*tests)) == sum(len(t) for t in tests)           # 5 disjoint test blocks


def test_committed_folds_are_63_14_14_and_follow_the_rule():
    folds = json.loads(cremad.FOLDS_FILE.read_text())["folds"]
    assert folds == cremad.speaker_folds(cremad.ACTORS)
    tests = set()
    for parts in folds.values():
        assert [len(parts[p]) for p in ("train", "val", "test")] == [63, 14, 14]
        assert len(set(parts["train"]) | set(parts["val"]) | set(parts["test"])) == 91
        assert not tests & set(parts["test"])
        tests |= set(parts["test"])
    assert cremad.cmd_splits(type("A", (), {"write": False})()) == 0


def test_two_runs_give_identical_caches_whatever_the_worker_count(cache):
    again = cache.parent / "cache_workers"
    assert run("prepare", "--raw", cache.parent / "raw", "--cache", again, *OPTS[:-3], "--workers", "2", "--no-progress") == 0
    for name in FILES:
        assert (again / name).read_bytes() == (cache / name).read_bytes(), name


def test_rerun_is_a_no_op(cache, monkeypatch, capsys):
    monkeypatch.setattr(cremad.SPEC, "process", lambda *a: pytest.fail("nothing should be decoded"))
    assert run("prepare", "--raw", cache.parent / "raw", "--cache", cache, *OPTS) == 0
    assert "complete and up to date" in capsys.readouterr().out


def test_resume_after_an_interruption_processes_only_the_rest(cache, monkeypatch, capsys):
    out = cache.parent / "cache_resume"
    real, calls = cremad.process, []

    def interrupted(clip, config):
        if len(calls) == 10:
            raise KeyboardInterrupt                 # Ctrl-C after 10 clips
        calls.append(clip.clip)
        return real(clip, config)

    monkeypatch.setattr(cremad.SPEC, "process", interrupted)
    assert run("prepare", "--raw", cache.parent / "raw", "--cache", out, *OPTS) == 130
    err = capsys.readouterr().err.strip()                      # one line, no traceback
    assert err == (f"CREMA-D: stopped by SIGINT; the work done so far is kept in {out / '.work'}: "
                   "rerun the same command to resume")
    assert (out / ".work").is_dir() and not (out / "meta.json").exists() and not (out / "frames.npy").exists()
    with pytest.raises(CacheError, match="incomplete"):
        DATASETS.create("cremad", seed=109, root=str(out))
    second = []
    monkeypatch.setattr(cremad.SPEC, "process", lambda clip, config: second.append(clip.clip) or real(clip, config))
    assert run("prepare", "--raw", cache.parent / "raw", "--cache", out, *OPTS) == 0
    assert len(second) == 26 and not set(second) & set(calls)
    for name in FILES:
        assert (out / name).read_bytes() == (cache / name).read_bytes(), name


def test_a_hard_kill_loses_only_unflushed_rows(cache):
    out = cache.parent / "cache_killed"
    script = textwrap.dedent(f"""
        import os, signal
        from data_scripts import cremad
        from data_scripts.cache import run_prepare
        scan = cremad.scan({str(cache.parent / 'raw')!r})
        cfg = cremad.default_config(frame_size=(24, 32))
        calls = []
        def dying(clip, config):
            if len(calls) == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            calls.append(1)
            return cremad.process(clip, config)
        folds = cremad.speaker_folds({{c.group for c in scan.clips}})
        run_prepare({str(out)!r}, dataset="cremad", scan=scan, process=dying, config=cfg,
                    frames_shape=cremad.shapes(cfg)[0], audio_shape=cremad.shapes(cfg)[1],
                    make_splits=lambda cl: cremad.splits_from_actor_folds(cl, folds, rule="x"),
                    class_names=cremad.CREMAD_CLASSES, progress=False, flush_every=2)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == -9 and not (out / "meta.json").exists()
    status = np.load(out / ".work" / "status.npy")
    done = np.flatnonzero(status == 1)
    assert 4 <= len(done) <= 5                   # flushed every 2 rows; the 5th only if a timed flush hit
    frames = np.load(out / ".work" / "frames.npy", mmap_mode="r")
    reference = open_cache(cache, dataset="cremad").frames
    for row in done:                             # a row is marked done only after its bytes are on disk
        np.testing.assert_array_equal(frames[row], reference[row])
    del frames
    assert run("prepare", "--raw", cache.parent / "raw", "--cache", out, *OPTS) == 0
    assert (out / "frames.npy").read_bytes() == (cache / "frames.npy").read_bytes()


def test_bad_files_are_named_counted_and_skipped(raw, tmp_path, capsys):
    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    flv = bad / "VideoFlash" / "1002_DFA_HAP_XX.flv"
    flv.write_bytes(flv.read_bytes()[: flv.stat().st_size // 3])                      # truncated video
    (bad / "AudioWAV" / "1003_DFA_SAD_XX.wav").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 72862\n")    # Git-LFS pointer
    (bad / "AudioWAV" / "1040_ITH_SAD_X.wav").write_bytes(b"RIFF")                     # CREMA-D's misnamed file
    (bad / "VideoFlash" / "1004_DFA_NEU_XX.flv").unlink()                              # missing partner
    assert run("all", "--raw", bad, "--cache", tmp_path / "cache", *OPTS) == 0
    out = capsys.readouterr().out
    for text in ["1002_DFA_HAP_XX.flv: truncated video", "1003_DFA_SAD_XX.wav: Git-LFS pointer",
                 "1040_ITH_SAD_X.wav: name does not follow", "1004_DFA_NEU_XX.flv is missing",
                 "left out 4 in total", "data_scripts.cremad download"]:
        assert text in out, text
    skipped = (tmp_path / "cache" / "skipped.csv").read_text()
    assert skipped.count("\n") == 5 and "1002_DFA_HAP_XX,verify," in skipped       # verify catches the truncation
    assert open_cache(tmp_path / "cache", dataset="cremad").meta["n_clips"] == 33


def test_a_fixed_file_is_picked_up_and_skips_can_be_retried(raw, tmp_path, monkeypatch, capsys):
    work = tmp_path / "raw"
    shutil.copytree(raw, work)
    pointer, silent = work / "AudioWAV" / "1005_DFA_FEA_XX.wav", work / "AudioWAV" / "1006_DFA_ANG_XX.wav"
    other = work / "AudioWAV" / "1001_DFA_NEU_XX.wav"
    good = {p: p.read_bytes() for p in (pointer, silent, other)}
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 72862\n")  # verify rejects
    for p in (silent, other):                                                       # prepare rejects: silent
        fabricate.write_wav(p, np.zeros(16000, dtype=np.float32), 16000)
    assert run("prepare", "--raw", work, "--cache", tmp_path / "c", *OPTS) == 0
    assert open_cache(tmp_path / "c", dataset="cremad").meta["n_clips"] == 33
    capsys.readouterr()
    pointer.write_bytes(good[pointer])                            # e.g. `download` fetched the media
    silent.write_bytes(good[silent])                              # a repaired file: its size and mtime change
    real, seen = cremad.process, []
    monkeypatch.setattr(cremad.SPEC, "process", lambda clip, config: seen.append(clip.clip) or real(clip, config))
    assert run("prepare", "--raw", work, "--cache", tmp_path / "c", *OPTS) == 0
    assert sorted(seen) == ["1005_DFA_FEA_XX", "1006_DFA_ANG_XX"]
    assert open_cache(tmp_path / "c", dataset="cremad").meta["n_clips"] == 35
    assert ("1 clips that failed to decode in an earlier run are not retried (their files are unchanged); "
            "pass --retry-skipped") in capsys.readouterr().out
    assert run("prepare", "--raw", work, "--cache", tmp_path / "c", *OPTS) == 0      # up to date: still said
    assert "pass --retry-skipped" in capsys.readouterr().out and len(seen) == 2
    assert run("prepare", "--raw", work, "--cache", tmp_path / "c", "--retry-skipped", *OPTS) == 0
    assert seen[2:] == ["1001_DFA_NEU_XX"]                        # still silent: skipped again, not lost
    assert open_cache(tmp_path / "c", dataset="cremad").meta["n_clips"] == 35


def test_missing_folder_and_wrong_layout_exit_2_naming_the_folder(raw, tmp_path, capsys):
    assert run("verify", "--raw", tmp_path / "nope", "--cache", tmp_path / "c") == 2
    assert f"CREMA-D folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(raw / "AudioWAV" / "1001_DFA_ANG_XX.wav", flat)
    assert run("verify", "--raw", flat, "--cache", tmp_path / "c") == 2
    err = capsys.readouterr().err
    assert "missing AudioWAV/ and VideoFlash/" in err and "lie directly in it" in err
    assert run("verify", "--raw", raw.parent, "--cache", tmp_path / "c") == 2
    assert f"found AudioWAV inside {raw}" in capsys.readouterr().err


def test_unusable_data_exits_1(raw, tmp_path, capsys):
    pointers = tmp_path / "raw"
    for sub in ("AudioWAV", "VideoFlash"):
        (pointers / sub).mkdir(parents=True)
        for f in (raw / sub).iterdir():
            (pointers / sub / f.name).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    assert run("all", "--raw", pointers, "--cache", tmp_path / "c", *OPTS) == 1
    assert "UNUSABLE - no usable clip" in capsys.readouterr().err
    # 6 actors spread over the committed 91-actor folds leave some folds without val or test actors
    assert run("prepare", "--raw", raw, "--cache", tmp_path / "c2", "--folds", "committed", "--frame-size", "24x32",
               "--workers", "0", "--no-progress") == 1
    err = capsys.readouterr().err
    assert "leave fold 3 val, fold 4 test empty with the 6 actors present" in err and "pass --folds from-data" in err
    assert not (tmp_path / "c2" / ".work").exists()                     # said before any decoding


def test_mlb_fold_file_is_used_when_asked(cache, tmp_path):
    names = sorted(r["clip"] for r in open_cache(cache, dataset="cremad").index)
    vavl = {str(k): {"train": [f"{n}.wav-0" for n in names[:24]], "val": [f"{n}.wav-1" for n in names[24:30]],
                     "test": [f"{n}.wav-2" for n in names[30:]]} for k in range(1, 6)}
    (tmp_path / "vavl.json").write_text(json.dumps(vavl))
    out = tmp_path / "cache"
    shutil.copytree(cache, out)
    assert run("prepare", "--raw", cache.parent / "raw", "--cache", out, "--folds", "mlb", "--mlb-folds-file",
               tmp_path / "vavl.json", *OPTS[2:]) == 0
    splits = json.loads((out / "splits.json").read_text())
    assert splits["folds"]["0"]["test"] == names[30:] and "VAVL" in splits["rule"]


def test_loader_layout_transforms_and_seeded_augmentation(cache):
    splits = DATASETS.create("cremad", seed=109, root=str(cache), image_size=16)
    assert splits.num_classes == 6 and sum(splits.sizes().values()) == 36
    assert splits.input_shapes() == {"audio": (1, 257, 188), "video": (3, 3, 16, 16)}
    ev = splits.test[0]
    assert ev["audio"].dtype == torch.float32 and ev["video"].dtype == torch.float32 and ev["label"].dtype == torch.int64
    # eval: Resize((16, 16)) then ImageNet normalisation of a grey level of 8 -> (8/255 - mean) / std
    left = ev["video"][:, 0, :, :3].mean(dim=(1, 2))
    expected = (torch.tensor(8 / 255) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(left, expected, atol=0.05, rtol=0)
    torch.testing.assert_close(splits.test[0]["video"], ev["video"])
    tr = splits.train
    a, b = tr[3]["video"], tr[3]["video"]
    torch.testing.assert_close(a, b)                               # seeded by (seed, epoch, index)
    tr.set_epoch(1)
    assert not torch.equal(tr[3]["video"], a)                      # a new epoch draws new crops
    torch.testing.assert_close(tr.labels(), torch.stack([tr[i]["label"] for i in range(len(tr))]))
    batch = next(iter(torch.utils.data.DataLoader(tr, batch_size=4)))
    assert batch["audio"].shape == (4, 1, 257, 188) and batch["video"].shape == (4, 3, 3, 16, 16)
    other = DATASETS.create("cremad", seed=19, root=str(cache), image_size=16)      # seed 19 -> fold 1
    assert {tuple(other.test.rows)} != {tuple(splits.test.rows)}
    with pytest.raises(ValueError, match="available folds: 0, 1, 2, 3, 4"):
        DATASETS.create("cremad", seed=0, root=str(cache), fold=7)


def test_the_cli_trains_on_the_cache(cache, tmp_path):
    """``python -m mmbal train --dataset cremad --data-root CACHE``: every clip of the fold is used and
    the fused model learns (the fabricated frames carry the label as a grey level)."""
    from mmbal.cli import main

    out = tmp_path / "run.json"
    assert main(["train", "--dataset", "cremad", "--data-root", str(cache), "--data-opt", "image_size=16",
                 "--data-opt", "fold=0", "--encoder", "small_cnn", "--balancer", "mlb", "--epochs", "8",
                 "--batch-size", "4", "--lr", "0.05", "--seed", "0", "--no-progress", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["data"]["sizes"] == {"train": 24, "val": 6, "test": 6} and record["data"]["num_classes"] == 6
    assert record["config"]["data"]["root"] == str(cache)
    losses = [epoch["train"]["loss/mm"] for epoch in record["history"]]
    assert len(losses) == 8 and losses[-1] < 0.6 * losses[0]
    assert record["history"][-1]["train"]["accuracy/mm"] > 0.5                 # chance: 1/6


@pytest.mark.parametrize("option, value", [("--frame-size", "0x0"), ("--frame-size", "-2x3"), ("--frame-size", "24x0"),
                                           ("--frame-size", "24by32"), ("--workers", "-1"), ("--show", "-5")])
def test_non_positive_sizes_and_counts_are_rejected_by_argparse(raw, tmp_path, option, value, capsys):
    with pytest.raises(SystemExit) as stop:
        run("prepare", "--raw", raw, "--cache", tmp_path / "c", f"{option}={value}")
    assert stop.value.code == 2
    assert f"argument {option}: wants" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_verify_counts_a_truncated_flv_as_unusable(raw, tmp_path, capsys):
    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    flv = bad / "VideoFlash" / "1003_DFA_DIS_XX.flv"
    flv.write_bytes(flv.read_bytes()[: flv.stat().st_size // 3])
    assert run("verify", "--raw", bad, "--cache", tmp_path / "c", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "usable clips                           35" in out
    assert f"{flv}: truncated video (holds" in out and "[verify]" in out


def test_from_data_folds_use_only_actors_with_a_usable_clip_and_say_so(tmp_path):
    raw = tmp_path / "raw"
    fabricate.fabricate_cremad(raw, actors=range(1001, 1008))                    # 7 actors
    for wav in (raw / "AudioWAV").glob("1007_*.wav"):                            # verify rejects all of 1007
        wav.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 72862\n")
    for wav in (raw / "AudioWAV").glob("1006_*.wav"):                            # prepare rejects all of 1006
        fabricate.write_wav(wav, np.zeros(16000, dtype=np.float32), 16000)
    assert run("prepare", "--raw", raw, "--cache", tmp_path / "c", *OPTS) == 0
    splits = json.loads((tmp_path / "c" / "splits.json").read_text())
    actors = {a for parts in splits["actor_folds"].values() for ids in parts.values() for a in ids}
    assert actors == {"1001", "1002", "1003", "1004", "1005"}
    assert [len(p["train"]) for p in splits["actor_folds"].values()] == [3] * 5
    assert splits["rule"] == ("actor-disjoint folds: numpy default_rng(0).permutation of the 5 sorted ids of the "
                              "actors with a usable clip (1001, 1002, 1003, 1004, 1005), cut into 5 blocks of 1; "
                              "fold k tests on block k, validates on block k+1 (mod 5), trains on the other 3 "
                              "actors. MLB runs folds 0, 1, 2 with seeds 109, 19, 337.")
    assert json.loads(cremad.FOLDS_FILE.read_text())["rule"] == cremad.FOLDS_RULE    # the committed rule unchanged
