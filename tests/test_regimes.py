"""Training regimes: unimodal, ensemble, Uni-Pre frozen / finetuned (short runs and their records)."""
import math

import pytest
import torch
from torch import nn

from mmbal.cli import main as cli_main
from mmbal.config import BalancerConfig, DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, RunConfig
from mmbal.experiments import run
from mmbal.models.unimodal import EnsembleModel
from mmbal.regimes import REGIMES
from mmbal.train import build_optimizer

FAST_DATA = {"sizes": (320, 120, 120), "audio_snr_db": 10.0}
CHANCE = 1 / 6


pytestmark = pytest.mark.usefixtures("one_thread")


def regime_config(regime, options=None, *, balancer="none", objective="joint") -> RunConfig:
    return RunConfig(data=DataConfig("synthetic_av", options=dict(FAST_DATA), batch_size=16),
                     model=ModelConfig(encoder_options={"width": 8, "out_dim": 32}),
                     objective=ObjectiveConfig(objective), balancer=BalancerConfig(balancer),
                     optim=OptimConfig(epochs=3, lr=0.05, schedule="constant"), progress=False,
                     device="cpu", regime=regime, regime_options=dict(options or {}))


def check_trace(record, steps=3 * 20):
    trace = record["trace"]
    quantities = [k for k in trace if k not in ("step", "epoch")]
    assert len(trace["step"]) == steps and quantities
    assert all(len(trace[k]) == steps and all(math.isfinite(v) for v in trace[k]) for k in quantities)


def test_unimodal_reports_its_head_as_mm_and_as_the_modality():
    done = run(regime_config("unimodal", {"modality": "audio"}))
    record = done.record
    assert set(record["test"]) == {"mm", "audio"}
    assert record["test"]["mm"] == record["test"]["audio"]
    assert record["test"]["mm"]["accuracy"] > CHANCE + 0.1
    assert done.trained.model.modalities == ("audio",)
    check_trace(record)
    assert set(record) >= {"config", "environment", "data", "best_epoch", "val", "test", "history", "trace"}


class ConstantMember(nn.Module):
    """A stand-in unimodal model that always predicts the same logits."""

    def __init__(self, modality, logits):
        super().__init__()
        self.modality = modality
        self.register_buffer("logits", torch.tensor([logits]))

    def forward(self, batch):
        return {"logits": {self.modality: self.logits}}


def test_ensemble_averages_the_members_logits_or_probabilities():
    members = {"audio": ConstantMember("audio", [2.0, 0.0, 0.0]), "video": ConstantMember("video", [0.0, 4.0, 0.0])}
    out = EnsembleModel(members, "logits")({})["logits"]
    torch.testing.assert_close(out["mm"], torch.tensor([[1.0, 2.0, 0.0]]))
    torch.testing.assert_close(out["video"], torch.tensor([[0.0, 4.0, 0.0]]))
    probs = (torch.softmax(torch.tensor([2.0, 0.0, 0.0]), 0) + torch.softmax(torch.tensor([0.0, 4.0, 0.0]), 0)) / 2
    torch.testing.assert_close(EnsembleModel(members, "probs")({})["logits"]["mm"].exp()[0], probs)


def test_ensemble_run_has_every_head_and_beats_chance():
    done = run(regime_config("ensemble"))
    record = done.record
    assert set(record["test"]) == {"mm", "audio", "video"}
    assert set(record["members"]) == {"audio", "video"}
    assert record["test"]["audio"] == record["members"]["audio"]["test"]["mm"]
    assert record["test"]["mm"]["accuracy"] > CHANCE + 0.1
    assert isinstance(record["best_epoch"], int)
    check_trace(record)
    logits, labels = done.trained.predict("test")                 # the ensemble's own forward pass
    assert (logits["mm"].argmax(1) == labels).float().mean().item() == record["test"]["mm"]["accuracy"]


@pytest.mark.parametrize("regime", ["uni_pre_frozen", "uni_pre_finetuned"])
def test_uni_pre_trains_a_fusion_on_pretrained_encoders(regime):
    done = run(regime_config(regime))
    record, model = done.record, done.trained.model
    assert set(record["test"]) == {"mm", "audio", "video"} and set(record["pretrain"]) == {"audio", "video"}
    assert record["test"]["mm"]["accuracy"] > CHANCE + 0.1
    check_trace(record)
    frozen = regime == "uni_pre_frozen"
    encoder_params = [p for m in ("audio", "video") for p in model.encoders[m].parameters()]
    assert all(p.requires_grad != frozen for p in encoder_params)
    in_optimizer = {id(p) for g in build_optimizer(model, OptimConfig()).param_groups for p in g["params"]}
    assert all((id(p) in in_optimizer) != frozen for p in encoder_params)
    model.train()
    model.encoders["audio"](next(iter(done.trained.loaders["val"]))["audio"][:2])
    assert model.encoders["audio"].training is not frozen      # frozen stays in eval mode


def test_uni_pre_uses_the_runs_balancer():
    record = run(regime_config("uni_pre_finetuned", balancer="mlb", objective="multi_loss")).record
    assert "coeff/video" in record["trace"] and record["config"]["balancer"]["name"] == "mlb"


@pytest.mark.parametrize("regime, options, balancer, message", [
    ("unimodal", {}, "none", "modality=NAME.*audio"),
    ("unimodal", {"modality": "smell"}, "none", "smell"),
    ("unimodal", {"modality": "audio"}, "mlb", "balancer 'none'"),
    ("ensemble", {"combine": "vote"}, "none", "combine"),
    ("ensemble", {"weights": 1}, "none", "unknown options.*combine"),
    ("pretrain", {}, "none", "valid regime names: ensemble"),
])
def test_bad_regime_input_fails_before_training(regime, options, balancer, message):
    with pytest.raises(ValueError, match=message):
        run(regime_config(regime, options, balancer=balancer))


def test_cli_lists_regimes_and_rejects_bad_ones(capsys):
    assert cli_main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "regimes:" in listed and all(name in listed for name in REGIMES.names())
    assert all(name in listed for name in ("agm", "pmr", "mslr", "mmcosine", "mlb", "fixed"))
    assert cli_main(["train", "--dataset", "synthetic_av", "--regime", "unimodal", "--no-progress"]) == 2
    assert "modality" in capsys.readouterr().err
