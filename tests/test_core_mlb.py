"""MLB's coefficient and its gradient hook, against hand-computed values."""
import math

import pytest
import torch

from mmbal.balancers import BALANCERS, mlb_coefficients
from mmbal.models import build_model
from mmbal.objectives import OBJECTIVES
from mmbal.train import build_optimizer
from mmbal.config import OptimConfig

SHAPES = {"audio": (1, 16, 8), "video": (1, 2, 8, 8)}


def test_mlb_coefficients_hand_computed():
    k = mlb_coefficients({"audio": torch.tensor(0.8), "video": torch.tensor(0.4)}, alpha=0.5)
    # r_audio = 0.4 / 0.8 = 0.5, r_video = 2
    assert k["audio"].item() == pytest.approx(1 + math.tanh(0.5 * (0.5 - 1)))
    assert k["video"].item() == pytest.approx(1 + math.tanh(0.5 * (2 - 1)))
    assert k["video"] > 1 > k["audio"]


def test_mlb_equal_scores_give_exactly_one():
    k = mlb_coefficients({"audio": torch.tensor(0.37), "video": torch.tensor(0.37)}, alpha=3.0)
    assert k["audio"].item() == 1.0 and k["video"].item() == 1.0


def test_mlb_beta_cap_only_changes_the_accelerated_branch():
    scores = {"audio": torch.tensor(0.9), "video": torch.tensor(0.3)}
    k = mlb_coefficients(scores, alpha=1.0, beta_max=3.0)
    assert k["video"].item() == pytest.approx(1 + 2.0 * math.tanh(1.0 * (3 - 1)))   # r = 3
    assert k["audio"].item() == pytest.approx(1 + math.tanh(1.0 * (1 / 3 - 1)))     # r = 1/3
    assert k["video"].item() < 3.0


def test_mlb_three_modalities_use_the_mean_of_the_others():
    s = {"a": torch.tensor(0.2), "b": torch.tensor(0.4), "c": torch.tensor(0.6)}
    k = mlb_coefficients(s, alpha=1.0)
    assert k["a"].item() == pytest.approx(1 + math.tanh(((0.4 + 0.6) / 2) / 0.2 - 1))
    assert k["c"].item() == pytest.approx(1 + math.tanh(((0.2 + 0.4) / 2) / 0.6 - 1))


@pytest.mark.parametrize("bad", [{"alpha": -1.0}, {"alpha": 1.0, "beta_max": 0.0}])
def test_mlb_rejects_bad_hyperparameters(bad):
    with pytest.raises(ValueError, match="alpha|beta_max"):
        BALANCERS.create("mlb", **bad)


def _model_and_batch(seed=0):
    torch.manual_seed(seed)
    model = build_model(input_shapes=SHAPES, num_classes=4)
    batch = {"audio": torch.randn(6, *SHAPES["audio"]), "video": torch.randn(6, *SHAPES["video"]),
             "label": torch.tensor([0, 1, 2, 3, 0, 1])}
    return model, batch


def test_mlb_hook_scales_each_modalitys_gradient_by_its_coefficient():
    model, batch = _model_and_batch()
    objective = OBJECTIVES.create("multi_loss")
    objective.configure(model)
    out = model(batch)
    objective(out["logits"], batch["label"])["total"].backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}

    balancer = BALANCERS.create("mlb", alpha=2.0)
    balancer.setup(model, build_optimizer(model, OptimConfig()))
    trace = balancer.after_backward(model, out, batch["label"])
    for m in model.modalities:
        k = trace[f"coeff/{m}"]
        assert abs(k.item() - 1.0) > 1e-3  # a real modulation, not the identity
        owned = {id(p) for p in model.modality_params()[m]}
        for name, p in model.named_parameters():
            if id(p) in owned:
                torch.testing.assert_close(p.grad, k * plain[name])
    for p in model.fusion.shared_parameters():  # the shared bias is not scaled
        name = next(n for n, q in model.named_parameters() if q is p)
        torch.testing.assert_close(p.grad, plain[name])


def test_update_form_scales_the_modalitys_learning_rate_instead():
    model, batch = _model_and_batch()
    optimizer = build_optimizer(model, OptimConfig())
    balancer = BALANCERS.create("mlb", alpha=2.0, acts_on="update")
    balancer.setup(model, optimizer)
    objective = OBJECTIVES.create("multi_loss")
    out = model(batch)
    objective(out["logits"], batch["label"])["total"].backward()
    trace = balancer.after_backward(model, out, batch["label"])
    for group in optimizer.param_groups:
        expected = 1.0 if group["modality"] is None else trace[f"coeff/{group['modality']}"].item()
        assert group["lr_scale"] == pytest.approx(expected)
