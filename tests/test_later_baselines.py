"""The later baselines of the journal table: MMPareto, ReconBoost, D&R and G-Blending, each against its
equations on hand-computed or recorded values."""
import math

import numpy as np
import pytest
import torch

from mmbal.balancers import BALANCERS, blend_weights, boosting_loss, pareto_grads, pareto_weight, stage_of
from mmbal.balancers.base import EpochContext
from mmbal.balancers.dnr import purity, reinit_
from mmbal.config import OptimConfig
from mmbal.data.base import DatasetSplits, holdout_split
from mmbal.data.tensor_dataset import TensorSplit
from mmbal.models import build_model
from mmbal.objectives import OBJECTIVES
from mmbal.train import Trainer

SHAPES = {"audio": (1, 16, 8), "video": (1, 2, 8, 8)}


def tiny_trainer(name: str, n: int = 48, **options) -> Trainer:
    torch.manual_seed(0)
    data = TensorSplit({m: torch.randn(n, *s) for m, s in SHAPES.items()}, torch.arange(n) % 4,
                       class_names=list("abcd"))
    balancer = BALANCERS.create(name, **options)
    model = build_model(input_shapes=SHAPES, num_classes=4)
    return Trainer(model, OBJECTIVES.create(balancer.objective), balancer, DatasetSplits(data, data, data),
                   optim=OptimConfig(epochs=1), batch_size=16, device="cpu", progress=False)


def context(trainer: Trainer, epoch: int) -> EpochContext:
    return EpochContext(epoch=epoch, model=trainer.model, train_loader=trainer.loaders["train"], device=trainer.device,
                        holdout_loader=trainer.loaders.get("holdout"))


def test_the_four_are_registered_with_their_objectives():
    objectives = {name: BALANCERS.create(name).objective for name in ("mmpareto", "reconboost", "dnr", "gblending")}
    assert objectives == {"mmpareto": "multi_loss", "reconboost": "multi_loss", "dnr": "joint",
                          "gblending": "multi_loss"}


# MMPareto ----------------------------------------------------------------------------------------------

def test_mmpareto_direction_never_opposes_either_loss_on_conflicting_pairs():
    g = torch.Generator().manual_seed(0)
    conflicting = 0
    for _ in range(300):
        a, b = torch.randn(2, 7, generator=g, dtype=torch.float64)
        cos, w = pareto_weight(a, b)
        d = w * a + (1 - w) * b
        if cos <= 0:
            conflicting += 1
            assert d @ a >= -1e-12 and d @ b >= -1e-12          # min-norm point: <d, g_i> >= |d|^2 >= 0
            assert d @ d <= min(a @ a, b @ b) + 1e-12            # no longer than either gradient
        else:
            assert w == 0.5                                       # agreeing gradients: the plain sum
    assert conflicting > 50


def test_mmpareto_equals_a_hand_computation_on_two_parameters():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])   # cos = -1/sqrt(2): a conflict
    cos, w = pareto_weight(a, b)
    assert cos.item() == pytest.approx(-1 / math.sqrt(2))
    assert w.item() == pytest.approx(0.6)                        # ((b - a).b) / |a - b|^2 = 3 / 5
    (grad,) = pareto_grads([a], [b], w, gamma=1.5)
    # 2 (0.6 a + 0.4 b) = (0.4, 0.8), norm 0.894 < |a + b| = 1: rescaled to norm 1, times gamma 1.5
    torch.testing.assert_close(grad, 1.5 * torch.tensor([0.4, 0.8]) / math.sqrt(0.8))
    (agree,) = pareto_grads([a], [torch.tensor([1.0, 1.0])], torch.tensor(0.5), gamma=1.0)
    torch.testing.assert_close(agree, torch.tensor([2.0, 1.0]))  # no conflict: the sum, norm already equal


def test_mmpareto_hook_sets_each_encoders_gradient_to_the_pareto_combination():
    trainer = tiny_trainer("mmpareto", gamma=1.5)
    model, balancer = trainer.model, trainer.balancer
    batch = next(iter(trainer.loaders["train"]))
    labels = batch["label"]
    outputs = balancer.forward(model, batch)
    losses = trainer.objective(outputs["logits"], labels)
    expected = {}
    for m in model.modalities:
        params = list(model.encoders[m].parameters())
        g_mm = torch.autograd.grad(losses["mm"], params, retain_graph=True)
        g_u = torch.autograd.grad(losses[m], params, retain_graph=True)
        _, w = pareto_weight(torch.cat([g.reshape(-1) for g in g_mm]), torch.cat([g.reshape(-1) for g in g_u]))
        expected[m] = pareto_grads(list(g_mm), list(g_u), w, 1.5)
    model.zero_grad(set_to_none=True)
    balancer.loss(outputs, labels, losses)["total"].backward()
    trace = balancer.after_backward(model, outputs, labels)
    for m in model.modalities:
        for p, e in zip(model.encoders[m].parameters(), expected[m]):
            torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-6)
        assert {f"cos/{m}", f"weight_mm/{m}"} <= set(trace)


# ReconBoost --------------------------------------------------------------------------------------------

def test_reconboost_stages_cycle_modality_ensemble_modality_ensemble():
    modalities = ("audio", "video")
    assert [stage_of(e, modalities, 1, 1) for e in range(6)] == ["audio", None, "video", None, "audio", None]
    assert [stage_of(e, modalities, 2, 1) for e in range(7)] == ["audio", "audio", None, "video", "video", None,
                                                                 "audio"]


def test_reconboost_loss_is_the_authors_boosting_form():
    logits, others = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.5, 1.5, 0.0]])
    labels = torch.tensor([1])
    q = torch.softmax(others, 1)[0, 1]
    log_p = torch.log_softmax(logits, 1)[0, 1]
    by_hand = (-5.0 + 1.0 * q) * log_p / 3                                      # mean over the 3 classes
    torch.testing.assert_close(boosting_loss(logits, others, labels, w1=5.0, w2=1.0), by_hand)


def test_reconboost_changes_only_the_active_modality_in_its_stage():
    trainer = tiny_trainer("reconboost")
    batch = next(iter(trainer.loaders["train"]))
    for epoch, learner in enumerate(["audio", None, "video", None]):
        trainer.balancer.on_epoch_start(context(trainer, epoch))
        assert trainer.balancer.learner == learner
        before = {k: v.clone() for k, v in trainer.model.named_parameters()}
        trainer._step(batch, 0)
        moved = {k.split(".")[0] + "." + k.split(".")[1] for k, v in trainer.model.named_parameters()
                 if not torch.equal(v, before[k])}
        trained = ("audio", "video") if learner is None else (learner,)
        assert moved == {f"{part}.{m}" for part in ("encoders", "heads") for m in trained}, (epoch, moved)
    out = trainer.balancer.forward(trainer.model, batch)                          # the ensemble prediction
    torch.testing.assert_close(out["logits"]["mm"], out["logits"]["audio"] + out["logits"]["video"])


# D&R ---------------------------------------------------------------------------------------------------

def test_purity_counts_the_majority_label_of_each_cluster():
    features = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1]])
    assert purity(features, np.array([0, 0, 0, 1, 1, 1]), 2) == 1.0
    assert purity(features, np.array([0, 0, 1, 1, 1, 0]), 2) == pytest.approx(4 / 6)


def test_dnr_reinit_is_the_convex_combination_with_the_diagnosed_strength():
    trainer = tiny_trainer("dnr", lam=3.0, reinit_every=1, holdout=0.25)
    assert len(trainer.loaders["train"].dataset) == 36 and len(trainer.loaders["holdout"].dataset) == 12
    balancer, model = trainer.balancer, trainer.model
    balancer.on_epoch_start(context(trainer, 0))                                 # keeps the initial weights
    initial = {m: [p.detach().clone() for p in model.encoders[m].parameters()] for m in model.modalities}
    for batch in trainer.loaders["train"]:
        trainer._step(batch, 0)
    current = {m: [p.detach().clone() for p in model.encoders[m].parameters()] for m in model.modalities}
    record = balancer.on_epoch_start(context(trainer, 1))
    assert record["reinits"] == 1
    for m in model.modalities:
        gap = abs(record[f"purity_train/{m}"] - record[f"purity_holdout/{m}"])
        a = math.tanh(3.0 * gap)
        assert record[f"strength/{m}"] == pytest.approx(a)
        assert 0 < a < 1
        for p, p0, p1 in zip(model.encoders[m].parameters(), initial[m], current[m]):
            torch.testing.assert_close(p.detach(), a * p0 + (1 - a) * p1)
    params = [torch.ones(3)]
    reinit_(params, [torch.zeros(3)], 0.25)
    torch.testing.assert_close(params[0], torch.full((3,), 0.75))


# G-Blending --------------------------------------------------------------------------------------------

def test_blend_weights_equal_the_closed_form_on_recorded_losses():
    previous = {"mm": (1.0, 1.2), "audio": (1.1, 1.3), "video": (1.5, 1.6)}      # (train, held-out)
    current = {"mm": (0.6, 1.0), "audio": (0.9, 1.0), "video": (1.4, 1.65)}
    # G = held-out drop (clamped at 0), O = growth of (held-out - train); w ~ G / O^2, summing to 3
    g = {"mm": 0.2, "audio": 0.3, "video": 0.0}
    o = {"mm": 0.4 - 0.2, "audio": 0.1 - 0.2, "video": 0.25 - 0.1}
    ratio = {k: g[k] / o[k] ** 2 for k in g}
    expected = {k: 3 * r / sum(ratio.values()) for k, r in ratio.items()}
    assert blend_weights(previous, current, 3) == pytest.approx(expected)
    assert blend_weights(previous, previous, 3) == pytest.approx({k: 1.0 for k in previous})   # no gain: uniform


def test_gblending_estimates_on_a_held_out_part_of_training_and_blends_the_loss():
    trainer = tiny_trainer("gblending", holdout=0.25, every=1)
    train_rows, held_rows = trainer.loaders["train"].dataset.index, trainer.loaders["holdout"].dataset.index
    assert not set(train_rows) & set(held_rows) and sorted(train_rows + held_rows) == list(range(48))
    balancer = trainer.balancer
    first = balancer.on_epoch_start(context(trainer, 0))
    assert balancer.weights == {"mm": 1.0, "audio": 1.0, "video": 1.0}
    for batch in trainer.loaders["train"]:
        trainer._step(batch, 0)
    second = balancer.on_epoch_start(context(trainer, 1))
    recorded = [{k: (r[f"train_loss/{k}"], r[f"holdout_loss/{k}"]) for k in ("mm", "audio", "video")}
                for r in (first, second)]
    assert balancer.weights == pytest.approx(blend_weights(*recorded, 3))
    assert balancer.weights != pytest.approx({"mm": 1.0, "audio": 1.0, "video": 1.0})
    batch = next(iter(trainer.loaders["train"]))
    outputs = balancer.forward(trainer.model, batch)
    losses = trainer.objective(outputs["logits"], batch["label"])
    total = balancer.loss(outputs, batch["label"], losses)["total"]
    torch.testing.assert_close(total, sum(balancer.weights[k] * losses[k] for k in ("mm", "audio", "video")))


def test_holdout_split_is_seeded_and_disjoint():
    data = TensorSplit({"audio": torch.zeros(10, 1)}, torch.arange(10), class_names=[str(i) for i in range(10)])
    splits, held = holdout_split(DatasetSplits(data, data, data), 0.3, seed=1)
    again, held_again = holdout_split(DatasetSplits(data, data, data), 0.3, seed=1)
    assert len(held) == 3 and held.index == held_again.index and splits.train.index == again.train.index
    assert sorted(held.index + splits.train.index) == list(range(10))
    assert holdout_split(DatasetSplits(data, data, data), 0.0, seed=1) == (DatasetSplits(data, data, data), None)
