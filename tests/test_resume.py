"""Exact resume: a training process killed with SIGKILL mid-epoch and resumed from its checkpoint writes the same
record (every metric, the whole coefficient trace) as the uninterrupted run; the checkpoint loads with
weights_only=True and the record replaces it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# PMR on the MLP fusion: balancer state (prototypes) and RNG use (dropout) across the kill; 20 steps per epoch
TRAIN = [sys.executable, "-m", "mmbal", "train", "--dataset", "synthetic_av", "--data-opt", "sizes=[320,64,64]",
         "--balancer", "pmr", "--fusion", "mlp", "--batch-size", "16", "--epochs", "3", "--seed", "3", "--lr", "0.05",
         "--no-progress", "--checkpoint-every", "3"]


def same_run(record: dict) -> dict:
    """A record without its timings."""
    return {**{k: record[k] for k in ("best_epoch", "val", "test", "trace")},
            "history": [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in record["history"]]}


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_record(tmp_path):
    env = dict(os.environ, PYTHONHASHSEED="0")
    ref, out = tmp_path / "ref.json", tmp_path / "run.json"
    subprocess.run([*TRAIN, "--out", str(ref)], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    ckpt = Path(f"{out}.ckpt")
    proc = subprocess.Popen([*TRAIN, "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    writes, last, deadline = 0, None, time.monotonic() + 240
    while writes < 2 and proc.poll() is None and time.monotonic() < deadline:   # kill after the 2nd checkpoint
        stamp = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        writes, last = writes + (stamp is not None and stamp != last), stamp
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL and not out.exists()     # killed before it finished
    state = torch.load(ckpt, weights_only=True)
    assert state["partial"] is not None and 0 < state["partial"]["batches"] < 20       # mid-epoch
    assert state["run"]["step"] % 3 == 0 and state["run"]["step"] > 0
    resumed = subprocess.run([*TRAIN, "--out", str(out), "--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = json.loads(ref.read_text()), json.loads(out.read_text())
    assert same_run(b) == same_run(a)
    assert len(b["trace"]["coeff/audio"]) == 60 and len(b["history"]) == 3
    assert b["test"]["mm"]["accuracy"] > 1 / 6                  # it learned something (6 classes)
    assert not ckpt.exists()                                    # the record replaced the checkpoint
