"""End-to-end: a short run on synthetic_av, the result JSON, and the CLI's errors."""
import json
import subprocess
import sys

import pytest

from mmbal.config import DataConfig, OptimConfig, RunConfig, BalancerConfig
from mmbal.experiments import run


@pytest.fixture(scope="module")
def mlb_record():
    cfg = RunConfig(data=DataConfig(name="synthetic_av"), balancer=BalancerConfig("mlb", {"alpha": 1.0}),
                    optim=OptimConfig(epochs=6), progress=False)
    return run(cfg).record


def test_short_run_is_well_above_chance(mlb_record):
    assert mlb_record["test"]["mm"]["accuracy"] > 2 / 6   # 6 classes: chance is 1/6
    assert mlb_record["test"]["audio"]["accuracy"] > 2 / 6


def test_result_has_history_trace_and_every_head(mlb_record):
    assert len(mlb_record["history"]) == 6
    assert set(mlb_record["test"]) == {"mm", "audio", "video"}
    assert set(mlb_record["test"]["video"]) == {"accuracy", "macro_f1", "ece"}
    steps = len(mlb_record["trace"]["step"])
    assert steps == 6 * 19  # 600 training samples / batch 32 -> 19 steps per epoch
    assert len(mlb_record["trace"]["coeff/video"]) == steps
    assert all(0 < k < 2 for k in mlb_record["trace"]["coeff/audio"])


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mmbal", *args], capture_output=True, text=True)


def test_cli_train_writes_json(tmp_path):
    out = tmp_path / "run.json"
    proc = _cli("train", "--dataset", "synthetic_av", "--balancer", "ogm_ge", "--epochs", "1",
                "--seed", "3", "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "test head" in proc.stdout
    record = json.loads(out.read_text())
    assert record["config"]["objective"]["name"] == "joint"   # OGM-GE's own objective
    assert 0.0 <= record["test"]["mm"]["accuracy"] <= 1.0
    assert record["environment"]["torch"]


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nope"], "unknown dataset 'nope'; valid dataset names:"),
    (["--balancer", "nope"], "unknown balancer 'nope'; valid balancer names:"),
    (["--fusion", "nope"], "unknown fusion 'nope'; valid fusion names:"),
    (["--dataset", "synthetic_av", "--data-opt", "audio_uninformative_frac=1.5"], "audio_uninformative_frac"),
    (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
])
def test_cli_bad_input_fails_before_training(args, message):
    proc = _cli("train", "--epochs", "1", "--no-progress", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "best epoch" not in proc.stdout
