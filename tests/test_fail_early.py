"""The CLI fails before training, in one line, on an output it cannot write or a bad setting; a diverged
run exits non-zero with a strict-JSON record; `table` knows which runs are the preset's, which cells
lack seeds, and names a broken result file (real subprocesses of ``python -m mmbal``)."""
import ctypes
import json
import os
import stat
import subprocess
import sys

import pytest

from mmbal.cli import main
from mmbal.config import DataConfig, OptimConfig, RunConfig
from mmbal.experiments import write_json
from mmbal.presets import get_preset
from mmbal.train import resolve_device, set_threads

TRAIN = ["train", "--dataset", "synthetic_av", "--epochs", "1", "--no-progress"]


def cli(*args, preexec_fn=None):
    return subprocess.run([sys.executable, "-m", "mmbal", *args], capture_output=True, text=True,
                          preexec_fn=preexec_fn, env={**os.environ, "CI": "1"})


def read_only(folder):
    """Make ``folder`` read-only for a CLI child: mode 0555, and for root (whom modes do not stop) a child
    without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (prctl PR_CAPBSET_DROP before exec)."""
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def drop():
        for cap in (1, 2):
            if libc.prctl(24, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    return drop


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity tokens."""
    return json.loads(text, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}"))


# -- 1: unwritable outputs are found before any training -------------------------------------------
@pytest.mark.parametrize("make, out, message", [
    (lambda d: d.joinpath("afile").write_text(""), "afile/run.json", "afile is a file, not a folder"),
    (lambda d: d.joinpath("adir").mkdir(), "adir", "it is a folder; give a file path such as"),
])
def test_train_out_that_cannot_be_written_fails_before_training(tmp_path, make, out, message):
    make(tmp_path)
    proc = cli(*TRAIN, "--out", str(tmp_path / out))
    assert proc.returncode == 2 and "best epoch" not in proc.stdout
    assert proc.stderr.startswith(f"error: cannot write {tmp_path / out}: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_train_and_sweep_into_a_read_only_folder_fail_before_training(tmp_path):
    ro = tmp_path / "ro"
    drop = read_only(ro)
    proc = cli(*TRAIN, "--out", str(ro / "run.json"), preexec_fn=drop)
    assert proc.returncode == 2 and "best epoch" not in proc.stdout
    assert proc.stderr.strip() == \
        f"error: cannot write {ro / 'run.json'}: folder {ro} is not writable (Permission denied)"
    proc = cli("table", "sweep", "digits_av", "--fast", "--methods", "joint,mlb", "--fusions", "concat",
               "--results", str(ro), "--no-progress", preexec_fn=drop)
    assert proc.returncode == 2 and "2 to run" in proc.stdout
    assert "FAILED" not in proc.stdout and "test mm acc" not in proc.stdout and "next:" not in proc.stdout
    assert proc.stderr.strip().endswith(f"folder {ro} is not writable (Permission denied)")
    assert not list(ro.iterdir())


# -- 2: a finished cell is one run with the cell's configuration -------------------------------------
def record(method, seed, acc, **config):
    """A result record as ``table run`` writes it (with the preset cell's config, changed by ``config``)."""
    heads = {h: {"accuracy": acc, "macro_f1": acc, "ece": 0.1} for h in ("mm", "audio", "video")}
    cfg = get_preset("digits_av").run_config(method, "concat", seed, **config)
    return {"config": cfg.to_dict(), "environment": {"cpu": "x86_64", "cpu_threads": 1},
            "cell": {"table": "digits_av", "method": method, "fusion": "concat", "seed": seed, "fast": False},
            "best_epoch": 0, "seconds": 1.0, "history": [{}] * cfg.optim.epochs, "val": heads, "test": heads}


def test_table_knows_short_runs_missing_seeds_and_broken_files(tmp_path):
    runs = tmp_path / "digits_av" / "runs"
    write_json(record("joint", 109, 0.138, epochs=1), runs / "joint__concat__seed109.json")   # an --epochs 1 run
    write_json(record("mlb", 109, 0.9), runs / "mlb__concat__seed109.json")
    (runs / "mlb__concat__seed19.json").write_text('{"test": ')                             # broken
    proc = cli("table", "sweep", "digits_av", "--methods", "joint,mlb", "--fusions", "concat", "--seeds", "109,19",
               "--dry-run", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"done  {runs / 'mlb__concat__seed109.json'}" in proc.stdout.splitlines()
    assert f"todo  {runs / 'joint__concat__seed109.json'}  (config differs: optim.epochs 1 -> 20)" in proc.stdout
    assert f"todo  {runs / 'mlb__concat__seed19.json'}  (unreadable (" in proc.stdout
    proc = cli("table", "summary", "digits_av", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    joint = next(line for line in proc.stdout.splitlines() if line.startswith("Joint training"))
    mlb = next(line for line in proc.stdout.splitlines() if line.startswith("MLB"))
    assert "13.8 ± 0.0 (1 of 3, 1 not the preset's config)" in joint and "90.0 ± 0.0 (1 of 3)" in mlb
    assert "2 full runs, epochs 1, 20" in proc.stdout
    assert f"not the preset's configuration: {runs / 'joint__concat__seed109.json'}: config differs: " \
           "optim.epochs 1 -> 20" in proc.stdout
    assert proc.stderr.strip() == (f"warning: unreadable result file {runs / 'mlb__concat__seed19.json'}: "
                                   "JSONDecodeError: Expecting value: line 1 column 10 (char 9)")
    proc = cli("table", "nope")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown preset 'nope'; valid presets:")


# -- 4: divergence and numeric ranges ---------------------------------------------------------------
def test_a_diverging_run_stops_and_its_record_says_so_in_strict_json(tmp_path):
    out = tmp_path / "run.json"
    proc = cli(*TRAIN, "--lr", "1e6", "--out", str(out))
    assert proc.returncode == 1 and "best epoch" not in proc.stdout
    assert proc.stderr.startswith("error: training diverged: the loss is nan at step ") and "of 19" in proc.stderr
    saved = strict_json(out.read_text())
    assert saved["diverged"] == proc.stderr.strip().removeprefix("error: ") and "test" not in saved
    assert saved["config"]["optim"]["lr"] == 1e6 and len(saved["config_hash"]) == 16
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask                      # 0644 under umask 022


@pytest.mark.parametrize("args, message", [
    (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
    (["--early-stop", "-1"], "early_stop must be an integer >= 1 (or unset), got -1"),
    (["--device", "tpu9"], "unknown device 'tpu9'; valid: auto, cpu, cuda, cuda:N"),
])
def test_cli_rejects_bad_settings_in_one_line(args, message):
    proc = cli(*TRAIN, *args)
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, f"error: {message}\n", "")


@pytest.mark.parametrize("args, message", [
    (["--lr", "nan"], "lr must be a finite number > 0, got nan"),
    (["--epochs", "0"], "epochs must be an integer >= 1, got 0"),
    (["--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
    (["--num-workers", "-1"], "num_workers must be an integer >= 0, got -1"),
    (["--momentum", "1"], "momentum must be in [0, 1), got 1.0"),
    (["--weight-decay=-1e-4"], "weight_decay must be a finite number >= 0, got -0.0001"),
    (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (["--device", "cuda:99"], "device 'cuda:99' requested but"),
])
def test_every_numeric_option_has_a_range(args, message, capsys):
    assert main([*TRAIN, *args]) == 2
    assert message in capsys.readouterr().err


def test_ranges_are_checked_where_configs_are_made():
    for make, message in ((lambda: OptimConfig(betas=(0.9, 1.0)), "betas must be numbers in"),
                          (lambda: OptimConfig(grad_clip=0.0), "grad_clip must be a finite number > 0"),
                          (lambda: OptimConfig(warmup_steps=-1), "warmup_steps must be an integer >= 0"),
                          (lambda: OptimConfig(epochs=2.5), "epochs must be an integer >= 1, got 2.5"),
                          (lambda: DataConfig(batch_size=True), "batch_size must be an integer"),
                          (lambda: RunConfig.from_dict({"optim": {"lr": -1}}), "lr must be a finite number > 0"),
                          (lambda: get_preset("digits_av").run_config("mlb", epochs=0), "epochs must be"),
                          (lambda: resolve_device("tpu9"), "unknown device 'tpu9'"),
                          (lambda: set_threads(0), "threads must be an integer >= 1")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            make()
    assert OptimConfig(grad_clip=None, early_stop=None).early_stop is None


# -- 8: result files are ordinary strict-JSON files ------------------------------------------------
def test_write_json_writes_strict_json_with_the_usual_mode(tmp_path):
    path = write_json({"loss": float("nan"), "ratio": [1.0, float("inf"), -float("inf")]}, tmp_path / "r.json")
    assert strict_json(path.read_text()) == {"loss": None, "ratio": [1.0, None, None]}
    old = os.umask(0o022)
    try:
        assert stat.S_IMODE(write_json({}, tmp_path / "m.json").stat().st_mode) == 0o644
    finally:
        os.umask(old)
