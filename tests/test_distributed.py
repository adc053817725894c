"""torchrun + DDP with rank-reduced balancing, on CPU with gloo: two processes with per-rank batch B/2 give the
coefficient trace (to 1e-5) and final metrics of one process with batch B, for MLB, OGM-GE, AGM and PMR
(GroupNorm models, no dropout: OGM-GE's noise then draws the same numbers in every rank and in one process, as
every rank seeds the same generator and consumes it alike). Run as a script, this file trains the four runs."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BALANCERS = {"mlb": ("multi_loss", {"alpha": 1.0}), "ogm_ge": ("joint", {"alpha": 0.8}),
             "agm": ("joint", {"alpha": 1.5}), "pmr": ("joint", {"alpha": 1.75})}


def train_all(out: str) -> None:
    """The four runs (global batch 16, 13 steps per epoch with a last batch of 8, 2 epochs); rank 0 writes them."""
    import torch

    from mmbal.config import BalancerConfig, DataConfig, ObjectiveConfig, OptimConfig, RunConfig
    from mmbal.distributed import init_from_env, is_main
    from mmbal.experiments import run

    torch.set_num_threads(1)
    init_from_env()
    records = {}
    for name, (objective, options) in BALANCERS.items():
        cfg = RunConfig(data=DataConfig("synthetic_av", options={"sizes": (200, 48, 48)}, batch_size=16),
                        objective=ObjectiveConfig(objective), balancer=BalancerConfig(name, options),
                        optim=OptimConfig(epochs=2, lr=0.01), seed=5, device="cpu", progress=False)
        records[name] = run(cfg).record
    if is_main():
        Path(out).write_text(json.dumps(records))


def test_two_gloo_ranks_with_half_batches_match_one_process(tmp_path):
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    procs = [subprocess.Popen([sys.executable, __file__, str(one)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True),
             subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", "29531", __file__, str(two)], cwd=ROOT, env=env,
                              stderr=subprocess.PIPE, text=True)]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    for name in BALANCERS:
        trace_a, trace_b = a[name]["trace"], b[name]["trace"]
        assert trace_a.keys() == trace_b.keys() and len(trace_a["step"]) == len(trace_b["step"]) == 26
        coeffs = [k for k in trace_a if k.startswith("coeff/")]
        assert coeffs, name
        for k in trace_a:
            worst = max(abs(x - y) for x, y in zip(trace_a[k], trace_b[k]))
            assert worst <= 1e-5 * max(1.0, max(map(abs, trace_a[k]))), (name, k, worst)
        for split in ("val", "test"):
            for head, metrics in a[name][split].items():
                assert metrics["accuracy"] == b[name][split][head]["accuracy"], (name, split, head)
                assert math.isclose(metrics["ece"], b[name][split][head]["ece"], abs_tol=1e-4), (name, split, head)
        for epoch_a, epoch_b in zip(a[name]["history"], b[name]["history"]):   # train stats: the global batch's
            for k, v in epoch_a["train"].items():
                assert math.isclose(v, epoch_b["train"][k], rel_tol=1e-4, abs_tol=1e-5), (name, k)
    assert len({round(a[n]["trace"]["coeff/audio"][-1], 6) for n in BALANCERS}) == 4     # four distinct methods


if __name__ == "__main__":
    train_all(sys.argv[1])
