"""Every balancer: hand-computed quantities, bad hyperparameters, update vs gradient form, short runs."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmbal.balancers import BALANCERS, MLB, EpochContext, FixedCoefficients, mslr_rates
from mmbal.balancers.agm import agm_coefficients, agm_ratios, agm_scores, coalition_logits, shapley_outputs
from mmbal.balancers.pmr import class_prototypes, pmr_weights, prototype_logits
from mmbal.config import BalancerConfig, DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, RunConfig
from mmbal.experiments import run
from mmbal.models import build_model
from mmbal.objectives import OBJECTIVES
from mmbal.train import build_optimizer

SHAPES = {"audio": (1, 16, 8), "video": (1, 2, 8, 8)}
# A synthetic_av recipe that learns within 3 short epochs (about 1 s of CPU per run).
FAST_DATA = {"sizes": (320, 120, 120), "audio_snr_db": 10.0}
CHANCE = 1 / 6


pytestmark = pytest.mark.usefixtures("one_thread")


def model_and_batch(seed=0, n=6):
    torch.manual_seed(seed)
    model = build_model(input_shapes=SHAPES, num_classes=4)
    batch = {"audio": torch.randn(n, *SHAPES["audio"]), "video": torch.randn(n, *SHAPES["video"]),
             "label": torch.arange(n) % 4}
    return model, batch


def fast_config(balancer, options=None, *, epochs=3, lr=0.05) -> RunConfig:
    return RunConfig(data=DataConfig("synthetic_av", options=dict(FAST_DATA), batch_size=16),
                     model=ModelConfig(encoder_options={"width": 8, "out_dim": 32}),
                     objective=ObjectiveConfig(BALANCERS.create(balancer, **(options or {})).objective),
                     balancer=BalancerConfig(balancer, dict(options or {})),
                     optim=OptimConfig(epochs=epochs, lr=lr, schedule="constant"),
                     progress=False, device="cpu")


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options, message", [
    ("mlb", {"alpha": -1.0}, "alpha"), ("mlb", {"beta_max": 0.0}, "beta_max"),
    ("mlb", {"beta_max": -2.0}, "beta_max"), ("mlb", {"variant": "softmax"}, "variant.*heads"),
    ("mlb", {"gamma": 1.0}, "unknown options.*gamma.*valid options: alpha"), ("mlb", {"acts_on": "loss"}, "acts_on"),
    ("ogm", {"alpha": -0.1}, "alpha"), ("agm", {"alpha": float("nan")}, "alpha"),
    ("agm", {"acts_on": "update"}, "gradient"), ("pmr", {"alpha": -1.0}, "alpha"),
    ("pmr", {"refresh_fraction": 0.0}, "refresh_fraction"), ("mslr", {"keep_memory": 0}, "keep_memory"),
    ("mslr", {"init_scale": {"audio": -0.7}}, "init_scale"), ("mmcosine", {"scaling": 0.0}, "scaling"),
    ("fixed", {}, "missing options.*coefficients"), ("fixed", {"coefficients": {"audio": -1.0}}, ">= 0"),
    ("fixed", {"coefficients": {}}, "dict modality -> k"), ("mlb_stopgrad", {}, "valid balancer names: agm"),
])
def test_bad_hyperparameters_fail_with_a_clear_message(name, options, message):
    with pytest.raises(ValueError, match=message):
        BALANCERS.create(name, **options)


def test_unknown_modality_in_options_fails_before_training():
    for name, options in [("fixed", {"coefficients": {"sound": 2.0}}), ("mslr", {"init_scale": {"sound": 2.0}})]:
        with pytest.raises(ValueError, match="unknown modalities.*sound"):
            run(fast_config(name, options))


def test_each_balancer_declares_the_objective_it_is_defined_with():
    assert FixedCoefficients.objective == "multi_loss"
    assert BALANCERS.create("mlb").objective == "multi_loss"
    assert BALANCERS.create("mlb", variant="stopgrad").objective == "joint"
    assert BALANCERS.create("mlb", variant="fused").objective == "joint"
    assert MLB.objective == "multi_loss"                                   # a variant does not touch the class
    assert all(BALANCERS.create(b).objective == "joint" for b in ("ogm", "ogm_ge", "agm", "pmr", "mslr", "mmcosine",
                                                                   "none"))


def test_acts_on_is_one_option_of_every_balancer_with_its_default():
    for name in BALANCERS.names():
        assert "acts_on" in BALANCERS.defaults(name), name
    assert BALANCERS.defaults("mslr")["acts_on"] == "update" and BALANCERS.defaults("mlb")["acts_on"] == "gradient"
    assert BALANCERS.defaults("mlb") == {"alpha": 0.5, "beta_max": None, "variant": "heads", "scope": "mmbal",
                                         "acts_on": "gradient", "start_epoch": 0, "end_epoch": None}
    assert BALANCERS.create("ogm_ge", alpha=0.3, acts_on="update").acts_on == "update"


# -- AGM -------------------------------------------------------------------------------------
def test_agm_quantities_hand_computed():
    labels = torch.tensor([0])
    phi = {"audio": torch.tensor([[math.log(3.0), 0.0]]), "video": torch.tensor([[0.0, math.log(3.0)]])}
    s = agm_scores(phi, labels)                       # p_audio = 3/4, p_video = 1/4
    assert s["audio"].item() == pytest.approx(math.log(4 / 3)) and s["video"].item() == pytest.approx(math.log(4))
    r = agm_ratios(s)                                 # exp(s_v - s_a) = 3
    assert r["audio"].item() == pytest.approx(3.0) and r["video"].item() == pytest.approx(1 / 3)
    k = agm_coefficients(r, {"audio": torch.tensor(1.0), "video": torch.tensor(1.0)}, alpha=0.5)
    assert k["audio"].item() == pytest.approx(math.exp(0.5 * (1 - 3)))
    assert k["video"].item() == pytest.approx(math.exp(0.5 * (1 - 1 / 3)))
    capped = agm_coefficients({"audio": torch.tensor(0.0)}, {"audio": torch.tensor(50.0)}, alpha=1.0)
    assert capped["audio"].item() == pytest.approx(math.exp(10.0))   # exponent capped at 10


def test_agm_shapley_outputs_on_a_linear_fusion_are_its_split():
    model, batch = model_and_batch()
    out = model(batch)
    values = coalition_logits(model.fusion, out["features"], None, full=out["logits"]["mm"])
    phi = shapley_outputs(values, model.modalities)
    split = model.fusion.unimodal_logits(out["features"])     # W_m z_m + b / 2
    for m in model.modalities:
        torch.testing.assert_close(phi[m], split[m])
    torch.testing.assert_close(phi["audio"] + phi["video"], out["logits"]["mm"])


def test_agm_scales_each_modalitys_gradient_and_tracks_the_running_mean():
    model, batch = model_and_batch()
    objective = OBJECTIVES.create("joint")
    objective.configure(model)
    objective(model(batch)["logits"], batch["label"])["mm"].backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    agm = BALANCERS.create("agm", alpha=1.0)
    agm.setup(model, build_optimizer(model, OptimConfig()))
    out = agm.forward(model, batch)
    objective(out["logits"], batch["label"])["mm"].backward()
    trace = agm.after_backward(model, out, batch["label"])
    for m in model.modalities:
        k = trace[f"coeff/{m}"]
        assert abs(k.item() - 1) > 1e-3
        torch.testing.assert_close(model.fusion.parts[m].weight.grad, k * plain[f"fusion.parts.{m}.weight"])
        conv = next(n for n, _ in model.named_parameters() if n.startswith(f"encoders.{m}."))
        torch.testing.assert_close(dict(model.named_parameters())[conv].grad, k * plain[conv])
    second = agm.forward(model, batch)                # same batch: target ratio = the one just seen
    t = agm.after_backward(model, second, batch["label"])
    torch.testing.assert_close(t["target/audio"], trace["ratio/audio"])


# -- PMR -------------------------------------------------------------------------------------
def test_pmr_prototypes_weights_and_loss_hand_computed():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    protos = class_prototypes(z, torch.tensor([0, 0, 1]), num_classes=3, previous=torch.full((3, 2), 7.0))
    torch.testing.assert_close(protos, torch.tensor([[1.0, 0.0], [0.0, 4.0], [7.0, 7.0]]))  # absent class kept
    torch.testing.assert_close(prototype_logits(torch.tensor([[1.0, 4.0]]), protos[:2]),
                               -torch.tensor([[4.0, 1.0]]))
    rho, beta = pmr_weights({"audio": torch.tensor(3.0), "video": torch.tensor(1.0)}, alpha=2.0)
    assert rho["audio"].item() == pytest.approx(3.0) and rho["video"].item() == pytest.approx(1 / 3)
    assert beta["audio"].item() == 0.0 and beta["video"].item() == 2.0   # only the lagging one

    pmr = BALANCERS.create("pmr", alpha=2.0)
    pmr.prototypes = {"audio": torch.tensor([[0.0, 0.0], [10.0, 0.0]]),      # audio sits on its prototype
                      "video": torch.tensor([[0.0, 1.0], [0.0, -1.0]])}      # video is ambiguous
    feats = {"audio": torch.tensor([[0.0, 0.0]]), "video": torch.tensor([[0.0, 0.0]])}
    losses = pmr.loss({"features": feats}, torch.tensor([0]), {"total": torch.tensor(1.0)})
    assert losses["total"].item() == pytest.approx(1.0 + 2.0 * math.log(2.0))  # + alpha * CE_video
    assert pmr.after_backward(None, None, None)["coeff/video"].item() == 2.0


def test_pmr_epoch_start_uses_class_means_of_the_encoder_features():
    model, batch = model_and_batch(n=8)
    pmr = BALANCERS.create("pmr")
    pmr.setup(model, build_optimizer(model, OptimConfig()))
    loader = [batch]
    report = pmr.on_epoch_start(EpochContext(epoch=0, model=model, train_loader=loader, device=torch.device("cpu")))
    with torch.no_grad():
        model.eval()
        _, feats = model.encode(batch)
    expected = feats["video"][batch["label"] == 2].mean(0)
    torch.testing.assert_close(pmr.prototypes["video"][2], expected)
    assert set(report) == {"proto_spread/audio", "proto_spread/video"} and report["proto_spread/audio"] > 0


# -- MSLR ------------------------------------------------------------------------------------
def test_mslr_rates_follow_the_validation_accuracies():
    ratios, rates = mslr_rates({"a": [0.5, 0.6], "b": [0.5, 0.6, 0.9], "c": [0.0, 0.0, 0.3]}, keep_memory=2,
                               init_scale={"b": 2.0})
    assert ratios["a"] == 1.0                                              # too short a history
    assert ratios["b"] == pytest.approx(0.9 / 0.55) and rates["b"] == pytest.approx(2 * 0.9 / 0.55)
    assert ratios["c"] == 1.0                                              # no division by zero
    model, _ = model_and_batch()
    optimizer = build_optimizer(model, OptimConfig())
    mslr = BALANCERS.create("mslr", init_scale={"audio": 0.7, "video": 1.3}, keep_memory=2)
    mslr.setup(model, optimizer)
    history = [{"val": {"audio": {"accuracy": a}, "video": {"accuracy": v}}}
               for a, v in [(0.6, 0.2), (0.8, 0.2), (0.7, 0.4)]]
    report = mslr.on_epoch_start(EpochContext(epoch=3, model=model, train_loader=None,
                                              device=torch.device("cpu"), history=history))
    assert report["ratio/audio"] == pytest.approx(0.7 / 0.7) and report["ratio/video"] == pytest.approx(2.0)
    expected = {"audio": 0.7 * 1.0, "video": 1.3 * 2.0}
    for group in optimizer.param_groups:
        want = expected[group["modality"]] if group["role"] in ("encoder", "fusion") and group["modality"] else 1.0
        assert group["lr_scale"] == pytest.approx(want), group["role"]
    _, rates = mslr_rates({"audio": [0.6, 0.8, 0.7]}, keep_memory=2)
    assert rates["audio"] == pytest.approx(1.0)


# -- MMCosine --------------------------------------------------------------------------------
def test_mmcosine_logits_are_scaled_cosines_summed_over_modalities():
    model, batch = model_and_batch()
    cos = BALANCERS.create("mmcosine", scaling=5.0)
    cos.setup(model, build_optimizer(model, OptimConfig()))
    out = cos.forward(model, batch)
    expected = sum(5.0 * F.cosine_similarity(out["features"][m][:, None, :],
                                             model.fusion.parts[m].weight[None, :, :], dim=2)
                   for m in model.modalities)                               # (B, C)
    torch.testing.assert_close(out["logits"]["mm"], expected)
    assert out["logits"]["mm"].abs().max() <= 5.0 * 2 + 1e-5
    torch.testing.assert_close(out["logits"]["audio"], model(batch)["logits"]["audio"])



def test_mmcosine_needs_a_fusion_that_declares_itself_late_linear():
    torch.manual_seed(0)
    for fusion, late in (("concat", True), ("sum", True), ("mlp", False), ("gated", False)):
        model = build_model(input_shapes=SHAPES, num_classes=4, fusion=fusion)
        assert model.fusion.late_linear is late
        cos = BALANCERS.create("mmcosine")
        if late:
            cos.setup(model, build_optimizer(model, OptimConfig()))
        else:
            with pytest.raises(ValueError, match="late linear fusion.*" + type(model.fusion).__name__):
                cos.setup(model, build_optimizer(model, OptimConfig()))


# -- MLB variants, fixed k, and the update form ------------------------------------------------
def test_mlb_variants_read_the_intended_scores():
    model, batch = model_and_batch()
    out = model(batch)
    fused = BALANCERS.create("mlb", variant="fused", alpha=1.0)
    fused.setup(model, build_optimizer(model, OptimConfig()))
    assert fused.scaled_roles == ("encoder", "fusion")                      # the heads are only probes
    split = model.fusion.unimodal_logits(out["features"])
    for m in model.modalities:
        want = torch.softmax(split[m], 1).gather(1, batch["label"][:, None]).mean()
        torch.testing.assert_close(fused.scores(model, out, batch["label"])[m], want.detach())
        heads = torch.softmax(out["logits"][m], 1).gather(1, batch["label"][:, None]).mean()
        assert not torch.allclose(fused.scores(model, out, batch["label"])[m], heads)


def test_mlb_stopgrad_is_mlb_on_the_joint_objectives_probe_heads():
    model, batch = model_and_batch()
    stop = BALANCERS.create("mlb", variant="stopgrad", alpha=2.0)
    objective = OBJECTIVES.create(stop.objective)
    objective.configure(model)                      # only the objective sets detach_heads
    stop.setup(model, build_optimizer(model, OptimConfig()))
    assert model.detach_heads is True
    out = stop.forward(model, batch)
    losses = objective(out["logits"], batch["label"])
    (losses["audio"] + losses["video"]).backward()  # the unimodal losses alone
    assert all(p.grad is None for p in model.encoders.parameters())         # no unimodal gradient reaches them
    assert all(model.heads[m].weight.grad.abs().sum() > 0 for m in model.modalities)
    trace = stop.after_backward(model, out, batch["label"])
    for m in model.modalities:                                              # scores from the (probe) heads
        want = torch.softmax(out["logits"][m], 1).gather(1, batch["label"][:, None]).mean()
        torch.testing.assert_close(trace[f"score/{m}"], want.detach())
    OBJECTIVES.create("multi_loss").configure(model)                        # heads that train the encoders
    with pytest.raises(ValueError, match="objective 'joint'"):
        BALANCERS.create("mlb", variant="stopgrad").setup(model, build_optimizer(model, OptimConfig()))
    assert model.detach_heads is False              # MLB itself never writes it


def test_fixed_coefficients_scale_gradients_exactly():
    model, batch = model_and_batch()
    OBJECTIVES.create("multi_loss")(model(batch)["logits"], batch["label"])["total"].backward()
    plain = {id(p): p.grad.clone() for p in model.parameters()}
    fixed = BALANCERS.create("fixed", coefficients={"audio": 0.25})
    fixed.setup(model, build_optimizer(model, OptimConfig()))
    trace = fixed.after_backward(model, model(batch), batch["label"])
    assert trace["coeff/audio"].item() == 0.25 and trace["coeff/video"].item() == 1.0
    for m, k in (("audio", 0.25), ("video", 1.0)):
        for p in model.modality_params()[m]:
            torch.testing.assert_close(p.grad, k * plain[id(p)])


def _one_step(balancer: str, optim: OptimConfig, acts_on: str, seed=0):
    """One training step as the trainer takes it; returns the parameter change and the coefficients."""
    model, batch = model_and_batch(seed)
    objective = OBJECTIVES.create("multi_loss")
    objective.configure(model)
    optimizer = build_optimizer(model, optim)
    bal = BALANCERS.create(balancer, **({"alpha": 2.0} if balancer == "mlb" else {}), acts_on=acts_on)
    bal.setup(model, optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    out = bal.forward(model, batch)
    objective(out["logits"], batch["label"])["total"].backward()
    trace = bal.after_backward(model, out, batch["label"])
    for group in optimizer.param_groups:
        group["lr"] = optim.lr * group["lr_scale"]
    optimizer.step()
    owner = {id(p): m for m, ps in model.modality_params().items() for p in ps}
    deltas = [(owner.get(id(p)), p.detach() - b) for p, b in zip(model.parameters(), before)]
    return deltas, trace


def test_update_form_equals_gradient_form_under_plain_sgd():
    sgd = OptimConfig(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0)
    grad_form, trace = _one_step("mlb", sgd, "gradient")
    update_form, _ = _one_step("mlb", sgd, "update")
    assert abs(trace["coeff/video"].item() - 1) > 0.01
    for (_, a), (_, b) in zip(grad_form, update_form):
        torch.testing.assert_close(a, b)


def test_under_adam_only_the_update_form_changes_the_step_by_k():
    adam = OptimConfig(name="adam", lr=1e-3, weight_decay=0.0)
    plain, _ = _one_step("none", adam, "gradient")
    grad_form, trace = _one_step("mlb", adam, "gradient")
    update_form, _ = _one_step("mlb", adam, "update")
    for (m, d0), (_, dg), (_, du) in zip(plain, grad_form, update_form):
        k = trace[f"coeff/{m}"].item() if m else 1.0
        torch.testing.assert_close(du, k * d0, rtol=1e-4, atol=1e-9)     # the step scales by k
        torch.testing.assert_close(dg, d0, rtol=1e-3, atol=1e-7)         # Adam divides k out


# -- every balancer trains -------------------------------------------------------------------
RUN_OPTIONS = {"mslr": {"init_scale": {"audio": 0.7, "video": 1.3}, "keep_memory": 1},
               "fixed": {"coefficients": {"audio": 0.8, "video": 1.5}},
               # Normalised class weights make the effective step lr / |w|^2: with s = 10 and this
               # short recipe's large lr MMCosine diverges in its first epoch, so it gets a calmer one.
               "mmcosine": {"scaling": 5.0}}
RUN_OPTIM = {"mmcosine": {"lr": 0.01, "epochs": 4}}


@pytest.mark.parametrize("name", BALANCERS.names())
def test_short_run_of_every_balancer_beats_chance_and_leaves_a_trace(name):
    optim = RUN_OPTIM.get(name, {})
    record = run(fast_config(name, RUN_OPTIONS.get(name), **optim)).record
    assert record["test"]["mm"]["accuracy"] > CHANCE + 0.05
    trace = record["trace"]
    steps = len(trace["step"])
    quantities = [k for k in trace if k not in ("step", "epoch")]
    held_out = round(BALANCERS.create(name, **RUN_OPTIONS.get(name, {})).holdout * 320)   # D&R, G-Blending
    assert steps == optim.get("epochs", 3) * math.ceil((320 - held_out) / 16) and quantities
    for key in quantities:
        assert len(trace[key]) == steps and all(math.isfinite(v) for v in trace[key]), key
    if name == "mslr":
        assert all("lr_scale/video" in h["balancer"] for h in record["history"])
