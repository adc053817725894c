"""Chapter 10's pieces: linear probe, coefficient averages, the fixed-k control and its preset."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from booktools import coefficient_averages, fixed_k_from_records, load_records
from mmbal.balancers import BALANCERS
from mmbal.config import OptimConfig
from mmbal.models import build_model
from mmbal.objectives import OBJECTIVES
from mmbal.presets import (ANALYSIS_OPTIMIZERS, FIXED_K_DIGITS, FIXED_K_DIGITS_V2, LONG_EPOCHS, LONG_EPOCHS_V2, ROWS,
                           Preset, get_preset)
from mmbal.probe import fit_probe, linear_probe
from mmbal.sweep import Cell, run_cell
from mmbal.tables import load_runs
from mmbal.train import Trained, build_optimizer

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"
SHAPES = {"audio": (1, 16, 8), "video": (1, 2, 8, 8)}


# -- linear probe ----------------------------------------------------------------------------------
def test_probe_separates_separable_features_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    centers = rng.normal(size=(4, 8)) * 4
    x = centers[y] + rng.normal(size=(400, 8))                      # (N, D) well separated classes
    good = fit_probe(x[:300], y[:300], x[300:], y[300:])
    assert good["test_accuracy"] > 0.95
    noise = rng.normal(size=(400, 8))                                # label-free features
    bad = fit_probe(noise[:300], y[:300], noise[300:], y[300:])
    assert bad["test_accuracy"] < 0.45                               # chance is 0.25
    with pytest.raises(ValueError, match="two classes"):
        fit_probe(x[:10], np.zeros(10), x[10:20], y[10:20])


def test_linear_probe_reads_the_named_encoder(one_thread):
    torch.manual_seed(0)
    model = build_model(input_shapes=SHAPES, num_classes=4)
    labels = torch.arange(64) % 4
    audio = torch.randn(64, *SHAPES["audio"]) + labels[:, None, None, None].float()    # audio holds the label
    batches = [{"audio": audio[i:i + 16], "video": torch.randn(16, *SHAPES["video"]), "label": labels[i:i + 16]}
               for i in range(0, 64, 16)]
    trained = Trained(model, {"train": batches, "test": batches}, torch.device("cpu"), model)
    out = linear_probe(trained, ("audio", "video"))
    assert out["audio"]["train_accuracy"] > 0.9 > out["video"]["test_accuracy"] - 0.5
    assert out["audio"]["dim"] == model.encode(batches[0])[1]["audio"].shape[1]
    with pytest.raises(ValueError, match="unknown modalities"):
        linear_probe(trained, ("depth",))


def test_a_probing_preset_writes_probe_accuracies_into_the_results(tmp_path, one_thread):
    tiny = Preset(name="tiny_probe", title="tiny", dataset="synthetic_av", encoder="small_cnn",
                  optim=OptimConfig(epochs=1, lr=0.05), methods={"mlb": ROWS["mlb"]},
                  data_options={"sizes": (96, 48, 64)}, seeds=(1,), needs_gpu=False, linear_probe=("audio", "video"))
    cell = Cell("tiny_probe", "mlb", "concat", 1)
    record = run_cell(cell, tmp_path / "tiny_probe" / "runs" / cell.filename, preset=tiny)
    probe = record["linear_probe"]
    assert set(probe) == {"audio", "video"} and all(0 <= p["test_accuracy"] <= 1 for p in probe.values())
    assert max(p["train_accuracy"] for p in probe.values()) > 1 / 6    # above chance (6 classes)
    runs = load_runs(tmp_path, "tiny_probe")
    assert runs.loc[0, "test_probe_video_accuracy"] == probe["video"]["test_accuracy"]
    # regimes probe the encoders they train: each ensemble member its own modality, a unimodal run its one encoder
    regimes = dataclasses.replace(tiny, methods={r: ROWS[r] for r in ("ensemble", "unimodal_video")})
    ens = run_cell(Cell("tiny_probe", "ensemble", "concat", 1), tmp_path / "e.json", preset=regimes)
    uni = run_cell(Cell("tiny_probe", "unimodal_video", "concat", 1), tmp_path / "u.json", preset=regimes)
    assert set(ens["linear_probe"]) == {"audio", "video"} and set(uni["linear_probe"]) == {"video"}
    assert ens["linear_probe"]["video"]["dim"] == uni["linear_probe"]["video"]["dim"]
    # the ensemble's video member is trained exactly as the unimodal video run of the same seed
    assert ens["linear_probe"]["video"]["test_accuracy"] == uni["linear_probe"]["video"]["test_accuracy"]


# -- coefficients and the fixed-k control ------------------------------------------------------
def test_coefficient_averages_by_epoch():
    trace = {"epoch": [0, 0, 1, 1], "coeff/audio": [1.0, 2.0, 3.0, 4.0], "coeff/video": [1.0, 1.0, 1.0, 0.0]}
    avg = coefficient_averages(trace)
    assert avg.loc["audio"].tolist() == [2.5, 1.5, 3.5] and avg.loc["video"].tolist() == [0.75, 1.0, 0.5]
    records = {1: {"trace": trace}, 2: {"trace": {**trace, "coeff/audio": [0.0] * 4}}}
    assert fixed_k_from_records(records) == {"audio": 1.25, "video": 0.75}
    with pytest.raises(ValueError, match="coeff/depth"):
        coefficient_averages(trace, ("depth",))


@pytest.mark.parametrize("table, seeds, constants", [("digits_av", 3, FIXED_K_DIGITS),
                                                     ("digits_av_v2", 5, FIXED_K_DIGITS_V2)])
def test_fixed_k_constants_are_the_committed_mlb_average(table, seeds, constants):
    records = load_records(RESULTS, table, "mlb", "concat")
    assert len(records) == seeds, f"the {table} MLB runs are committed"
    assert fixed_k_from_records(records) == constants
    assert constants["video"] > 1 > constants["audio"]                 # audio leads on Digits-AV


def test_fixed_k_update_form_sets_exactly_its_constants_as_learning_rate_scales():
    torch.manual_seed(0)
    model = build_model(input_shapes=SHAPES, num_classes=4)
    optimizer = build_optimizer(model, OptimConfig())
    fixed = BALANCERS.create("fixed", coefficients={"audio": 0.7, "video": 1.4}, acts_on="update")
    fixed.setup(model, optimizer)
    batch = {"audio": torch.randn(8, *SHAPES["audio"]), "video": torch.randn(8, *SHAPES["video"]),
             "label": torch.arange(8) % 4}
    out = model(batch)
    OBJECTIVES.create("multi_loss")(out["logits"], batch["label"])["total"].backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for _ in range(2):                                                 # constant across steps
        fixed.after_backward(model, out, batch["label"])
        scales = {g["modality"]: g["lr_scale"] for g in optimizer.param_groups}
        assert scales == {None: 1.0, "audio": 0.7, "video": 1.4}
    for p, g in zip(model.parameters(), grads):                        # gradients untouched
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("table, recipe_table, fixed_k, long_epochs", [
    ("digits_av_optim", "digits_av", FIXED_K_DIGITS, LONG_EPOCHS),
    ("digits_av_optim_v2", "digits_av_v2", FIXED_K_DIGITS_V2, LONG_EPOCHS_V2)])
def test_analysis_preset_rows(table, recipe_table, fixed_k, long_epochs):
    preset, recipe = get_preset(table), get_preset(recipe_table)
    assert len(preset.methods) == 14 and len(preset.seeds) >= 5 and preset.linear_probe == ("audio", "video")
    for opt in ANALYSIS_OPTIMIZERS:
        cfg = {m: preset.run_config(f"{m}_{opt}") for m in ("joint", "multi_loss", "ogm_ge", "mlb", "mlb_update", "fixed")}
        assert {c.optim.name for c in cfg.values()} == {opt}
        assert cfg["joint"].objective.name == cfg["ogm_ge"].objective.name == "joint"
        assert cfg["mlb"].balancer.options["acts_on"] == "gradient"
        assert cfg["mlb_update"].balancer.options["acts_on"] == cfg["fixed"].balancer.options["acts_on"] == "update"
        assert cfg["fixed"].balancer.options["coefficients"] == fixed_k
    sgd = preset.run_config("mlb_sgd")
    assert sgd.optim == recipe.run_config("mlb").optim and sgd.data == recipe.run_config("mlb").data
    adam = preset.run_config("mlb_adam").optim
    assert dataclasses.replace(adam, name="sgd", lr=sgd.optim.lr) == sgd.optim and adam.lr == 1e-3
    assert preset.run_config("mlb_long_sgd").optim.epochs == long_epochs == 2 * sgd.optim.epochs
    assert preset.run_config("mlb_long_sgd", fast=True).optim.epochs == 2          # FAST still short
