"""SIGTERM and Ctrl-C on `prepare` with decoding workers, in a real subprocess: the worker pool ends with
the run (no orphaned worker), the run says so in one line, and the next run resumes from what was done."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_scripts import cremad, fabricate

REPO = Path(__file__).resolve().parents[1]
OPTS = ["--folds", "from-data", "--frame-size", "24x32", "--no-progress"]
FILES = ["frames.npy", "audio.npy", "index.csv", "splits.json", "skipped.csv", "meta.json"]
SLOW_PREPARE = """
import signal, sys, time
from data_scripts import cremad
signal.signal(signal.SIGINT, signal.default_int_handler)   # as in a terminal: a shell's background job (nohup ... &)
                                                           # starts with Ctrl-C ignored, and Python keeps that
real = cremad.process
def slow(clip, config):                      # 36 clips x 0.3 s over 2 workers: about 6 s of decoding
    time.sleep(0.3)
    return real(clip, config)
cremad.SPEC.process = slow
sys.exit(cremad.main(cremad.SPEC, sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("cremad_signals")
    fabricate.fabricate_cremad(root / "raw")
    assert cremad.main(cremad.SPEC, ["prepare", "--raw", str(root / "raw"), "--cache", str(root / "reference"),
                                     "--workers", "0", *OPTS]) == 0
    return root / "raw"


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table from /proc")
@pytest.mark.parametrize("how", ["SIGTERM to prepare", "Ctrl-C to the process group"])
def test_a_stopped_prepare_ends_its_workers_and_resumes(raw, tmp_path, how, capsys):
    out = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PREPARE, "prepare", "--raw", str(raw), "--cache", str(out),
                             "--workers", "2", *OPTS], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(workers := children(proc.pid)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the decoding workers never started"
        time.sleep(0.05)
    time.sleep(1.5)                                               # a few clips decoded, none flushed yet
    if how.startswith("SIGTERM"):
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)                        # what a terminal's Ctrl-C does
    _, err = proc.communicate(timeout=60)
    name, code = ("SIGTERM", 143) if how.startswith("SIGTERM") else ("SIGINT", 130)
    assert proc.returncode == code
    assert err.strip() == (f"CREMA-D: stopped by {name}; the work done so far is kept in {out / '.work'}: "
                           "rerun the same command to resume")
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)], "orphaned decoding workers"
    assert not (out / "meta.json").exists()
    assert cremad.main(cremad.SPEC, ["prepare", "--raw", str(raw), "--cache", str(out), "--workers", "0", *OPTS]) == 0
    resumed = capsys.readouterr().out
    done = int(resumed.split("resuming: ")[1].split(" of 36")[0])
    assert 1 <= done < 36                                         # the finished clips were flushed on the way out
    assert f"{36 - done} clips to process" in resumed
    for name in FILES:
        assert (out / name).read_bytes() == (raw.parent / "reference" / name).read_bytes(), name
