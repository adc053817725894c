"""Sweeps: grid and shards, resume after a kill (no partial JSON), compact records, a real tiny run."""
import dataclasses
import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from mmbal.cli import main
from mmbal.config import OptimConfig
from mmbal.experiments import read_json, write_json
from mmbal.presets import DATASET_SHAPES, PRESETS, ROWS, Preset, get_preset
from mmbal.sweep import (TRACE_POINTS, Cell, cell_status, grid, parse_shard, read_timing, result_path, run_cell,
                         shapes_key, subsample_trace, sweep, table_wall_seconds)
from mmbal.tables import ece_from_bins

TINY = Preset(name="tiny", title="tiny synthetic", dataset="synthetic_av", encoder="small_cnn",
              optim=OptimConfig(epochs=1, lr=0.05), methods={m: ROWS[m] for m in ("joint", "mlb", "unimodal_audio")},
              ablation={"sum": ("joint", "mlb")}, data_options={"sizes": (96, 48, 64)}, seeds=(1, 2),
              needs_gpu=False)


def fake_runner(calls, *, fail_at=None):
    """Writes a minimal record (the cell's config) atomically; raises KeyboardInterrupt at call ``fail_at``."""
    def runner(cell, path, *, preset=TINY, fast=False, epochs=None, **kw):
        calls.append(cell)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt("killed")
        cfg = preset.run_config(cell.method, cell.fusion, cell.seed, fast=fast, epochs=epochs)
        record = {"test": {"mm": {"accuracy": 0.5}}, "cell": cell.__dict__, "config": cfg.to_dict()}
        write_json(record, path)
        return record
    return runner


def is_finished(path, cell, **kw) -> bool:
    return cell_status(path, TINY.run_config(cell.method, cell.fusion, cell.seed, **kw)) is None


def test_grid_and_shards_partition_the_table():
    cells = grid(TINY)
    assert len(cells) == 2 * 5 and len(set(cells)) == 10
    shards = [set(grid(TINY)[i::3]) for i in range(3)]
    assert set.union(*shards) == set(cells) and sum(len(s) for s in shards) == len(cells)
    assert len(grid(TINY, fast=True)) == 5                       # FAST: first seed only
    assert {c.fusion for c in grid(TINY, fusions=["sum"])} == {"sum"}
    assert len(grid("digits_av")) == (18 + 5 * 3) * 3             # 18 rows + 5 ablation fusions x 3 rows
    assert {(c.method, c.fusion) for c in grid("digits_av", fusions=["transformer"])} == \
        {(m, "transformer") for m in ("joint", "multi_loss", "mlb")}
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1-4", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="valid: joint"):
        grid(TINY, methods=["agm"])


def test_killed_sweep_resumes_only_missing_runs(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        sweep(TINY, tmp_path, runner=fake_runner(calls, fail_at=4), progress=False, log=lambda s: None)
    runs = tmp_path / "tiny" / "runs"
    assert len(list(runs.glob("*.json"))) == 3                  # three finished before the kill
    (stopped,) = [json.loads(x) for x in (tmp_path / "tiny" / "sweep_timing.jsonl").read_text().splitlines()]
    assert stopped["stopped"] and stopped["runs"] == 3          # the stopped sweep still logged what it finished
    assert not [p for p in runs.iterdir() if p.name.endswith(".tmp")]
    result_path(tmp_path, calls[3]).write_text('{"test"')      # a truncated file counts as not run
    assert cell_status(result_path(tmp_path, calls[3]), TINY.run_config("mlb")).startswith("unreadable (")
    again = []
    out = sweep(TINY, tmp_path, runner=fake_runner(again), progress=False, log=lambda s: None)
    assert len(out["skipped"]) == 3 and len(again) == 7 and set(again).isdisjoint(calls[:3])
    assert all(is_finished(result_path(tmp_path, c), c) for c in grid(TINY))
    assert sweep(TINY, tmp_path, runner=fake_runner([]), progress=False, log=lambda s: None)["done"] == []


def test_each_sweep_logs_its_own_wall_time_and_run_seconds(tmp_path):
    sweep(TINY, tmp_path, shard=(0, 2), runner=fake_runner([]), progress=False, log=lambda s: None)
    sweep(TINY, tmp_path, shard=(0, 2), runner=fake_runner([]), progress=False, log=lambda s: None)   # nothing to run
    sweep(TINY, tmp_path, shard=(1, 2), runner=fake_runner([]), progress=False, log=lambda s: None)
    lines = [json.loads(x) for x in (tmp_path / "tiny" / "sweep_timing.jsonl").read_text().splitlines()]
    assert [e["shard"] for e in lines] == ["0/2", "1/2"] and [e["runs"] for e in lines] == [5, 5]
    assert set(lines[0]["run_seconds"]) | set(lines[1]["run_seconds"]) == {result_path(tmp_path, c).stem
                                                                            for c in grid(TINY)}
    for e in lines:
        assert e["wall_seconds"] >= sum(e["run_seconds"].values()) - 0.5 and e["torch_threads"] >= 1
    timing = read_timing(tmp_path, "tiny")
    assert list(timing["shard"]) == ["0/2", "1/2"] and timing["runs"].sum() == len(grid(TINY))
    assert table_wall_seconds(timing) == timing["wall_seconds"].max()
    with pytest.raises(FileNotFoundError, match="no sweep of 'other'"):
        read_timing(tmp_path, "other")


def test_table_wall_time_sums_each_shards_invocations_and_takes_the_longest_shard():
    timing = pd.DataFrame({"shard": ["0/2", "1/2", "0/2", "1/2"], "wall_seconds": [100.0, 90.0, 30.0, 50.0]})
    assert table_wall_seconds(timing) == 140.0            # shard 1: 90 + 50; shard 0: 100 + 30


def test_a_terminated_sweep_logs_its_finished_runs_and_restores_the_handler(tmp_path):
    """SIGTERM (a scheduler's stop, `kill`) stops a sweep like Ctrl-C: the finished runs are logged, then it raises."""
    calls, before = [], signal.getsignal(signal.SIGTERM)
    inner = fake_runner(calls)

    def terminated_at_the_third(cell, path, **kw):
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return inner(cell, path, **kw)

    with pytest.raises(KeyboardInterrupt):
        sweep(TINY, tmp_path, runner=terminated_at_the_third, progress=False, log=lambda s: None)
    (line,) = [json.loads(x) for x in (tmp_path / "tiny" / "sweep_timing.jsonl").read_text().splitlines()]
    assert line["stopped"] and line["runs"] == 2 and len(list((tmp_path / "tiny" / "runs").glob("*.json"))) == 2
    assert signal.getsignal(signal.SIGTERM) is before
    out = sweep(TINY, tmp_path, runner=fake_runner([]), progress=False, log=lambda s: None)
    assert len(out["done"]) == 8 and len(out["skipped"]) == 2
    assert not json.loads((tmp_path / "tiny" / "sweep_timing.jsonl").read_text().splitlines()[-1])["stopped"]


def test_a_sweep_stopped_before_its_first_run_finished_still_logs_its_wall_time(tmp_path):
    def interrupted(cell, path, **kw):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(TINY, tmp_path, runner=interrupted, progress=False, log=lambda s: None)
    (line,) = read_timing(tmp_path, "tiny").to_dict("records")
    assert line["stopped"] and line["runs"] == 0 and line["run_seconds"] == {} and line["wall_seconds"] >= 0


def test_the_cli_reports_a_stopped_sweep_in_one_line(tmp_path, monkeypatch, capsys):
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt("sweep stopped")

    monkeypatch.setattr("mmbal.cli.sweep", stopped)
    assert main(["table", "sweep", "digits_av", "--results", str(tmp_path), "--no-progress"]) == 130
    assert "the same command resumes" in capsys.readouterr().err


def test_interrupted_write_leaves_no_partial_json(tmp_path, monkeypatch):
    path = tmp_path / "r.json"

    def dump_then_die(obj, fh, **kw):
        fh.write('{"test": {"mm"')
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", dump_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_json({"test": {}}, path)
    assert os.listdir(tmp_path) == [] and cell_status(path, TINY.run_config("joint")) == "not run"


def test_subsample_trace_keeps_ends_and_values():
    trace = {"step": list(range(1000)), "coeff/audio": [i / 1000 for i in range(1000)], "short": [1, 2]}
    out = subsample_trace(trace)
    assert len(out["step"]) == TRACE_POINTS and out["step"][0] == 0 and out["step"][-1] == 999
    assert out["coeff/audio"] == pytest.approx([s / 1000 for s in out["step"]], rel=1e-4)
    assert "short" not in out                                   # ragged columns are dropped
    assert subsample_trace({"step": [0, 1, 2]})["step"] == [0, 1, 2]


def test_run_cell_writes_a_small_self_describing_record(tmp_path):
    cell = Cell("tiny", "mlb", "concat", 2)
    record = run_cell(cell, tmp_path / "mlb.json", preset=TINY)
    saved = read_json(tmp_path / "mlb.json")
    assert saved["cell"] == {"table": "tiny", "method": "mlb", "fusion": "concat", "seed": 2, "fast": False}
    assert saved["config"]["balancer"] == {"name": "mlb", "options": record["config"]["balancer"]["options"]}
    assert saved["config"]["balancer"]["options"]["alpha"] == 0.5       # factory default written out
    assert len(saved["trace"]["step"]) <= TRACE_POINTS and "coeff/video" in saved["trace"]
    bins = saved["reliability"]["test"]["mm"]
    assert sum(bins["count"]) == 64                                     # every test sample binned
    assert ece_from_bins(bins) == pytest.approx(saved["test"]["mm"]["ece"], abs=1e-5)
    assert saved["test"]["audio"]["accuracy"] > 1 / 6                   # learns something in one epoch


def test_cli_dry_run_and_run_validation(tmp_path, capsys):
    assert main(["sweep", "--table", "digits_av", "--dry-run", "--results", str(tmp_path),
                 "--shard", "1/2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 99 // 2 and all(line.startswith("todo") for line in lines)
    assert main(["table", "sweep", "digits_av", "--dry-run", "--results", str(tmp_path), "--shard", "1/2"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == lines          # the old spelling is an alias
    assert main(["table", "show", "cremad_resnet18"]) == 0
    shown = capsys.readouterr().out
    assert "run.sh" in shown and "beta_max" in shown and "109" in shown
    assert main(["table", "summary", "nope"]) == 2 and "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["run", "--preset", "digits_av", "--method", "nope", "--results", str(tmp_path)]) == 2
    assert "valid: unimodal_audio" in capsys.readouterr().err
    assert get_preset("digits_av").fusion == "concat"


def test_a_failing_cell_is_reported_and_retried(tmp_path):
    calls = []

    def flaky(cell, path, **kw):
        calls.append(cell)
        if cell.method == "mlb" and cell.seed == 1:
            raise RuntimeError("diverged")
        return fake_runner([])(cell, path)

    out = sweep(TINY, tmp_path, runner=flaky, progress=False, log=lambda s: None)
    assert [(c.method, c.seed) for c in out["failed"]] == [("mlb", 1), ("mlb", 1)]   # concat and sum
    assert len(out["done"]) == 8 and not is_finished(result_path(tmp_path, out["failed"][0]), out["failed"][0])
    again = sweep(TINY, tmp_path, runner=fake_runner([]), progress=False, log=lambda s: None)
    assert sorted(map(str, again["done"])) == sorted(map(str, out["failed"]))


def test_a_cell_run_with_another_config_is_rerun_and_said_so(tmp_path):
    logs = []
    first = sweep(TINY, tmp_path, epochs=3, runner=fake_runner([]), progress=False, log=logs.append)
    assert len(first["done"]) == 10 and "10 to run" in logs[0]
    logs.clear()
    again = sweep(TINY, tmp_path, runner=fake_runner([]), progress=False, log=logs.append)   # the preset's 1 epoch
    assert len(again["done"]) == 10 and again["skipped"] == []
    assert "  re-run joint/concat/seed1: config differs: optim.epochs 3 -> 1" in logs
    path = result_path(tmp_path, Cell("tiny", "mlb", "concat", 2))
    saved = read_json(path)
    assert saved["config"]["optim"]["epochs"] == 1
    del saved["config"]["optim"]["grad_clip"]            # a record written before a field existed
    saved["config"].update(device="cuda", progress=True)  # where it ran is not what it computed
    saved["config"]["data"].update(root="/elsewhere", num_workers=4)
    write_json(saved, path)
    assert is_finished(path, Cell("tiny", "mlb", "concat", 2))
    assert not is_finished(path, Cell("tiny", "mlb", "concat", 2), fast=True)
    assert sweep(TINY, tmp_path, runner=fake_runner([]), progress=False, log=lambda s: None)["done"] == []


def test_committed_results_count_as_finished_for_their_preset():
    paths = sorted((Path(__file__).parent.parent / "book" / "results").glob("*/runs/*.json"))
    assert len(paths) > 100
    for path in paths:
        cell = read_json(path)["cell"]
        cfg = get_preset(cell["table"]).run_config(cell["method"], cell["fusion"], cell["seed"],
                                                   device="cuda", data_root="/data")
        assert cell_status(path, cfg) is None, path
    assert cell_status(path, dataclasses.replace(cfg, seed=cfg.seed + 1)) == \
        f"config differs: seed {cfg.seed} -> {cfg.seed + 1}"


def test_job_array_shards_in_separate_folders_merge_to_the_whole_table(tmp_path):
    """Two shards written to two folders (two jobs of an array), merged by ``table summary --merge``, give the
    summary of the whole table swept in one folder."""
    def runner(cell, path, *, preset=None, fast=False, epochs=None, **kw):
        cfg = get_preset(cell.table).run_config(cell.method, cell.fusion, cell.seed, fast=fast, epochs=epochs)
        acc = 0.5 + 0.01 * (cell.seed % 7) + (0.1 if cell.method == "mlb" else 0.0)
        metrics = {h: {"accuracy": acc, "macro_f1": acc - 0.1, "ece": 0.05} for h in ("mm", "audio", "video")}
        record = {"config": cfg.to_dict(), "cell": dict(vars(cell), fast=fast), "val": metrics, "test": metrics,
                  "environment": {"commit": "abc", "cpu": "x86", "cpu_threads": 1}, "seconds": 1.0, "history": []}
        write_json(record, path)
        return record

    subset = dict(methods=["joint", "mlb"], fusions=["concat"], runner=runner, progress=False, log=lambda s: None)
    whole = sweep("digits_av", tmp_path / "whole", **subset)
    parts = [sweep("digits_av", tmp_path / f"shard{i}", shard=(i, 2), **subset) for i in range(2)]
    assert sorted(map(str, parts[0]["done"] + parts[1]["done"])) == sorted(map(str, whole["done"]))
    assert parts[0]["done"] and parts[1]["done"] and len(whole["done"]) == 6
    assert main(["table", "summary", "digits_av", "--results", str(tmp_path / "whole"), "--out", str(tmp_path / "a.csv")]) == 0
    assert main(["table", "summary", "digits_av", "--results", str(tmp_path / "shard0"), "--merge",
                 str(tmp_path / "shard1"), "--out", str(tmp_path / "b.csv")]) == 0
    a, b = (tmp_path / "a.csv").read_text(), (tmp_path / "b.csv").read_text()
    assert a == b and "mlb" in a and ",3," in a                  # 3 seeds per cell


def test_table_estimate_prints_rows_and_a_total_from_timed_steps(capsys):
    """``table estimate`` times one step per cell on CPU (batch 2, scaled to the preset's) and bounds each row's
    device-hours by its early stopping (CREMA-D: 100 epochs, 300 for MLB) and its 1500 epochs."""
    assert main(["table", "estimate", "cremad_resnet18", "--methods", "mlb,unimodal_audio", "--fusions", "concat",
                 "--steps", "1", "--batch", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["mlb"], ["unimodal_audio"])}
    assert set(rows) == {"mlb", "unimodal_audio"}
    assert rows["mlb"][5] == "301-1500" and rows["unimodal_audio"][5] == "101-1500"
    for row in rows.values():
        assert float(row[2]) > 0 and row[3] == str(-(-4043 // 32)) and row[6] == "3"   # s/step, steps/epoch, runs
        least, most = map(int, row[5].split("-"))
        assert abs(float(row[8]) / float(row[7]) - most / least) < 0.05 * most / least
    assert "total:" in out and "cpu-hours for 6 runs" in out


def test_every_preset_has_the_input_shapes_its_estimate_times():
    """The Conformer preset reads pre-extracted (frames, features) sequences, not spectrograms and frames."""
    assert {name: shapes_key(get_preset(name)) in DATASET_SHAPES for name in PRESETS} == dict.fromkeys(PRESETS, True)
    assert DATASET_SHAPES[shapes_key(get_preset("cremad_conformer"))]["shapes"] == {"audio": [250, 1024],
                                                                                    "video": [150, 1408]}
