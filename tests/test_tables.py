"""Aggregation: mean ± population std on hand-made result JSONs, tables, reliability bins."""
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from booktools import paired_difference, reproduce_commands
from mmbal.cli import main
from mmbal.experiments import write_json
from mmbal.metrics import expected_calibration_error, reliability_bins
from mmbal.presets import get_preset
from mmbal.tables import (NOT_RUN, accuracy_table, compare_runs, ece_from_bins, format_pm, load_runs,
                          paper_table, read_summary, summarize, write_summary)


def record(method, fusion, seed, acc, *, video=0.3, fast=False, table="cremad_resnet18"):
    heads = {"mm": {"accuracy": acc, "macro_f1": acc - 0.05, "ece": 0.1},
             "audio": {"accuracy": 0.6, "macro_f1": 0.5, "ece": 0.2},
             "video": {"accuracy": video, "macro_f1": 0.2, "ece": 0.05}}
    config = get_preset(table).run_config(method, fusion, seed, fast=fast).to_dict()    # as a sweep writes it
    assert config["data"]["options"]["fold"] == {109: 0, 19: 1, 337: 2}[seed]
    return {"config": config,
            "environment": {"commit": "abc1234", "device": "cuda", "gpu": "NVIDIA H200"},
            "cell": {"table": table, "method": method, "fusion": fusion, "seed": seed, "fast": fast},
            "best_epoch": 3, "seconds": 10.0, "history": [{}] * 5, "val": heads, "test": heads}


@pytest.fixture
def results(tmp_path):
    runs = tmp_path / "cremad_resnet18" / "runs"
    for seed, acc, video in ((109, 0.6, 0.3), (19, 0.7, 0.4), (337, 0.8, 0.2)):
        write_json(record("mlb", "concat", seed, acc, video=video), runs / f"mlb__concat__seed{seed}.json")
    write_json(record("joint", "concat", 109, 0.55), runs / "joint__concat__seed109.json")
    write_json(record("joint", "film", 109, 0.5), runs / "joint__film__seed109.json")
    return tmp_path


def test_mean_and_population_std(results):
    runs = load_runs(results, "cremad_resnet18")
    assert len(runs) == 5 and set(runs["hardware"]) == {"NVIDIA H200 (cuda)"}
    s = summarize(runs, "cremad_resnet18").set_index(["method", "fusion"])
    mlb = s.loc[("mlb", "concat")]
    assert mlb["test_accuracy_mean"] == pytest.approx(0.7)
    assert mlb["test_accuracy_std"] == pytest.approx(np.sqrt(0.02 / 3))    # population std, not 0.1
    assert mlb["test_video_accuracy_mean"] == pytest.approx(0.3)
    assert mlb["test_video_accuracy_std"] == pytest.approx(np.std([0.3, 0.4, 0.2]))
    assert mlb["test_macro_f1_mean"] == pytest.approx(0.65)
    assert (mlb["n"], mlb["seeds"], mlb["folds"], mlb["commit"]) == (3, "19;109;337", "1;0;2", "abc1234")
    assert s.loc[("joint", "concat"), "test_accuracy_std"] == 0.0
    assert list(summarize(runs, "cremad_resnet18")["method"][:2]) == ["joint", "mlb"]   # preset order


def test_table_cells_and_reference_column(results):
    _, summary = write_summary("cremad_resnet18", results)
    table = accuracy_table(summary, "cremad_resnet18")
    assert table.loc["MLB", "concat"] == "70.0 ± 8.2"
    assert table.loc["Joint training", "film"] == "50.0 ± 0.0 (1 of 3)"          # 1 of the preset's 3 seeds
    assert table.loc["Multi-loss", "film"] == NOT_RUN and table.loc["OGM", "film"] == "—"
    paper = paper_table(summary, "cremad_resnet18")
    assert paper.loc["MLB", "reference: MCR Table 1"] == "71.9 ± 2.2"
    assert paper.loc["PMR", "reference: MCR Table 1"] == "not reported"
    assert (accuracy_table(pd.DataFrame(), "ave_resnet18")["concat"] == NOT_RUN).all()


def test_csv_round_trip(results):
    path, summary = write_summary("cremad_resnet18", results)
    back = read_summary(path)
    assert list(back["method"]) == list(summary["method"])
    np.testing.assert_allclose(back["test_accuracy_std"], summary["test_accuracy_std"], rtol=1e-5)
    assert back.loc[back["method"] == "mlb", "seeds"].item() == "19;109;337"
    none, empty = write_summary("ucf101_resnet18", results)
    assert none is None and empty.empty
    assert format_pm(float("nan"), 0.0) == NOT_RUN and format_pm(0.12345, 0.01, digits=2) == "12.35 ± 1.00"


def test_reliability_bins_reproduce_ece():
    g = torch.Generator().manual_seed(0)
    logits, labels = 3 * torch.randn(500, 6, generator=g), torch.randint(0, 6, (500,), generator=g)
    bins = reliability_bins(logits, labels)
    assert len(bins["count"]) == 15 and sum(bins["count"]) == 500
    assert ece_from_bins(bins) == pytest.approx(expected_calibration_error(logits, labels), abs=1e-5)
    # hand case: two samples, confidence 0.9 (right) and 0.6 (wrong) -> ECE = (0.1 + 0.6) / 2
    two = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6]]))
    b = reliability_bins(two, torch.tensor([0, 0]), n_bins=10)
    assert b["count"][8] == 1 and b["count"][5] == 1 and ece_from_bins(b) == pytest.approx(0.35)


def test_paired_difference_pairs_by_seed():
    rows = [{"method": m, "fusion": "concat", "seed": s, "test_accuracy": v}
            for m, vals in (("a", (0.80, 0.70, 0.90)), ("b", (0.70, 0.72, 0.80))) for s, v in zip((1, 2, 3), vals)]
    runs = pd.DataFrame(rows + [{"method": "a", "fusion": "concat", "seed": 4, "test_accuracy": 0.1}])  # unpaired
    d = paired_difference(runs, "a", "b")
    assert d["n"] == 3 and d["wins"] == 2
    assert d["diff"] == pytest.approx((0.10 - 0.02 + 0.10) / 3)
    assert d["diff_std"] == pytest.approx(np.std([0.10, -0.02, 0.10]))
    assert d["verdict"] == "within seed noise"           # a's own seed std (with seed 4) is larger
    diffs = np.array([0.10, -0.02, 0.10])
    t = diffs.mean() / (diffs.std(ddof=1) / np.sqrt(3))
    assert d["p_paired_t"] == pytest.approx(2 * scipy.stats.t.sf(abs(t), df=2))
    one = paired_difference(runs[runs["seed"] == 1], "a", "b")
    assert one["n"] == 1 and one["verdict"] == "one seed: no verdict" and np.isnan(one["p_paired_t"])


def test_reproduce_commands_name_gpus_only_for_gpu_tables():
    cpu = reproduce_commands("digits_av", shards=2)
    assert cpu[0] == "python -m mmbal table sweep digits_av --shard 0/2 &"
    assert cpu[-1] == "python -m mmbal table summary digits_av"
    gpu = reproduce_commands("cremad_resnet18", shards=2)
    assert gpu[0].startswith("python -m data_scripts.cremad") and gpu[1].startswith("CUDA_VISIBLE_DEVICES=0 ")


def test_compare_runs_cell_by_cell_against_the_seed_std(results, tmp_path, capsys):
    rerun = tmp_path / "rerun"
    runs = rerun / "cremad_resnet18" / "runs"
    write_json(record("mlb", "concat", 109, 0.6), runs / "mlb__concat__seed109.json")            # identical
    write_json(record("mlb", "concat", 19, 0.75), runs / "mlb__concat__seed19.json")             # +0.05 <= std
    write_json(record("joint", "concat", 109, 0.56), runs / "joint__concat__seed109.json")       # std 0: outside
    write_json(record("ogm", "concat", 109, 0.5), runs / "ogm__concat__seed109.json")            # no reference
    diff = compare_runs(load_runs(results, "cremad_resnet18"), load_runs(rerun, "cremad_resnet18"))
    assert list(zip(diff["method"], diff["seed"])) == [("joint", 109), ("mlb", 19), ("mlb", 109)]
    mlb19 = diff.set_index(["method", "seed"]).loc[("mlb", 19)]
    assert mlb19["difference"] == pytest.approx(0.05) and mlb19["seed_std"] == pytest.approx(np.sqrt(0.02 / 3))
    assert list(diff["identical"]) == [False, False, True] and list(diff["within_seed_std"]) == [False, True, True]

    out = tmp_path / "check.json"
    assert main(["compare", "cremad_resnet18", "--results", str(results), "--rerun", str(rerun),
                 "--out", str(out)]) == 1                                    # joint is outside its seed std
    assert "3 cells re-run: 1 identical, 2 within the reference cell's seed std" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert (saved["cells"], saved["identical"], saved["within_seed_std"]) == (3, 1, 2)
    assert saved["rerun_hardware"] == ["NVIDIA H200 (cuda)"] and len(saved["rows"]) == 3
    assert main(["table", "compare", "cremad_resnet18", "--results", str(results),
                 "--rerun", str(tmp_path / "none")]) == 2
