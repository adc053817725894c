"""The overhead benchmark runs and prints a well-formed ratio table (its numbers are not asserted:
timings belong to bench/, measured in one run, never to a test)."""
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_balancer_overhead_prints_one_finite_ratio_per_method():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "balancer_overhead.py"), "--small", "--rounds", "1",
                           "--warmup", "0", "--methods", "mlb,ogm_ge"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()
            if line.split() and line.split()[0] in ("baseline", "mlb", "ogm_ge")}
    assert set(rows) == {"baseline", "mlb", "ogm_ge"}
    assert float(rows["baseline"][3]) == 1.0                          # the baseline's own ratio
    assert all(math.isfinite(float(r[3])) and float(r[3]) > 0 for r in rows.values())
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "balancer_overhead.py"), "--small", "--methods", "nope"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert bad.returncode == 2 and "unknown balancers ['nope']" in bad.stderr


def test_gpu_step_bench_runs_on_cpu_and_prints_ratios():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_step.py"), "--small", "--steps", "1", "--warmup",
                           "0", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("cremad_resnet18")]
    assert len(rows) == 2 and rows[0][-3] == "x1.00"                  # fp32 eager, then bf16 + channels_last
    rates = [float(r[r.index("samples/s") - 1]) for r in rows]
    assert all(math.isfinite(r) and r > 0 for r in rates)


def test_digits_av_pool_bench_finds_identical_records_and_prints_a_ratio():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "digits_av_speed.py"), "--pool", "--epochs", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("identical records; MaxPool2x2 / kernel = "), proc.stdout
    ratio = float(last.rsplit("=", 1)[1])
    assert math.isfinite(ratio) and ratio > 0
