"""Issue 12: the set-up around each baseline's formula, as options that match the authors' code (modulation windows,
AGM's conditional clip and input-zeroing coalitions, PMR's feature normalisation and prototype momentum, MSLR's
gradient form, MLB's reference scope) and the paper presets that name them."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmbal.balancers import BALANCERS, EpochContext
from mmbal.balancers.agm import coalition_logits
from mmbal.config import BalancerConfig, DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, RunConfig
from mmbal.experiments import run
from mmbal.models import build_model
from mmbal.objectives import OBJECTIVES
from mmbal.presets import DEFAULT_SOURCE, get_preset
from mmbal.train import build_optimizer

SHAPES = {"audio": (1, 16, 8), "video": (1, 2, 8, 8)}
pytestmark = pytest.mark.usefixtures("one_thread")


def setup(balancer: str, options=None, *, fusion="concat", batchnorm=False, optim=None, seed=0, n=8):
    """A tiny model (GroupNorm small CNNs, or BatchNorm ones), a batch, an optimizer and a set-up balancer."""
    torch.manual_seed(seed)
    model = build_model(input_shapes=SHAPES, num_classes=4, fusion=fusion, encoder_options={"width": 8})
    for block in (b for e in model.encoders.values() for b in e.trunk if batchnorm):   # conv, norm, ReLU(, pool)
        block[1] = nn.BatchNorm2d(block[0].out_channels)
    batch = {"audio": torch.randn(n, *SHAPES["audio"]), "video": torch.randn(n, *SHAPES["video"]),
             "label": torch.arange(n) % 4}
    bal = BALANCERS.create(balancer, **(options or {}))
    objective = OBJECTIVES.create(bal.objective)
    objective.configure(model)
    optimizer = build_optimizer(model, optim or OptimConfig(momentum=0.0, weight_decay=0.0))
    bal.setup(model, optimizer)
    return model, batch, bal, objective, optimizer


def backward(model, batch, bal, objective):
    """One step up to ``after_backward``: (outputs, losses, gradients before the balancer touched them)."""
    model.train()
    outputs = bal.forward(model, batch)
    losses = bal.loss(outputs, batch["label"], objective(outputs["logits"], batch["label"]))
    model.zero_grad(set_to_none=True)
    losses["total"].backward()
    return outputs, losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def begin(bal, model, epoch, loader=None, history=None):
    return bal.begin_epoch(EpochContext(epoch=epoch, model=model, train_loader=loader, device=torch.device("cpu"),
                                        history=history or []))


# -- modulation windows ------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", [("mlb", {}), ("ogm", {}), ("ogm_ge", {}), ("agm", {"alpha": 3.0}),
                                           ("fixed", {"coefficients": {"audio": 0.5, "video": 2.0}})])
def test_outside_the_window_every_coefficient_is_exactly_one_and_gradients_are_untouched(name, options):
    model, batch, bal, objective, _ = setup(name, {**options, "start_epoch": 1, "end_epoch": 2})
    for epoch, inside in ((0, False), (1, True), (2, False)):
        assert begin(bal, model, epoch)["window"] == float(inside)
        if name == "agm" and epoch == 1:
            bal.running = bal.running + torch.tensor([1.0, -1.0])      # targets away from the ratios: k != 1
        torch.manual_seed(epoch)
        outputs, _, before = backward(model, batch, bal, objective)
        trace = bal.after_backward(model, outputs, batch["label"])
        after = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        coeffs = torch.stack([trace[f"coeff/{m}"] for m in model.modalities])
        untouched = all(torch.equal(before[n], after[n]) for n in before)
        if inside:
            assert (coeffs != 1).any() and (name == "agm" or not untouched)
        else:
            assert torch.equal(coeffs, torch.ones(2)) and untouched


def test_pmr_and_mslr_are_neutral_outside_their_window():
    loader = [{"audio": torch.randn(8, *SHAPES["audio"]), "video": torch.randn(8, *SHAPES["video"]),
               "label": torch.arange(8) % 4}]
    model, batch, pmr, objective, _ = setup("pmr", {"alpha": 2.0, "end_epoch": 1})
    for epoch in (0, 1):
        begin(pmr, model, epoch, loader)
        outputs = pmr.forward(model, batch)
        plain = objective(outputs["logits"], batch["label"])
        total = pmr.loss(outputs, batch["label"], plain)["total"]
        weights = torch.stack([pmr._trace[f"coeff/{m}"] for m in model.modalities])
        assert (weights.max() == 2.0 and total > plain["total"]) if epoch == 0 else \
            (torch.equal(weights, torch.zeros(2)) and torch.equal(total, plain["total"]))
    model, batch, mslr, objective, optimizer = setup("mslr", {"init_scale": {"audio": 0.5, "video": 2.0},
                                                              "start_epoch": 1})
    scales = [{g["modality"]: g["lr_scale"] for g in optimizer.param_groups if g["role"] == "encoder"}
              for epoch in (0, 1) if begin(mslr, model, epoch) is not None]
    assert scales == [{"audio": 1.0, "video": 1.0}, {"audio": 0.5, "video": 2.0}]


def test_a_windowed_run_records_the_window_and_modulates_only_inside_it():
    cfg = RunConfig(data=DataConfig("synthetic_av", options={"sizes": (96, 48, 48)}, batch_size=16),
                    model=ModelConfig(encoder_options={"width": 8, "out_dim": 32}), objective=ObjectiveConfig("joint"),
                    balancer=BalancerConfig("ogm", {"start_epoch": 1, "end_epoch": 2}),
                    optim=OptimConfig(epochs=3, lr=0.05, schedule="constant"), progress=False, device="cpu")
    record = run(cfg).record
    assert [h["balancer"]["window"] for h in record["history"]] == [0.0, 1.0, 0.0]
    epoch, trace = torch.tensor(record["trace"]["epoch"]), record["trace"]
    k = torch.stack([torch.tensor(trace[f"coeff/{m}"]) for m in ("audio", "video")])        # (2, steps)
    assert torch.equal(k[:, epoch != 1], torch.ones_like(k[:, epoch != 1])) and (k[:, epoch == 1] < 1).any()


@pytest.mark.parametrize("options", [{"start_epoch": -1}, {"start_epoch": 2, "end_epoch": 2}, {"end_epoch": 1.5}])
def test_a_bad_window_fails_with_a_clear_message(options):
    with pytest.raises(ValueError, match="0 <= start_epoch < end_epoch"):
        BALANCERS.create("ogm", **options)
    with pytest.raises(ValueError, match="mmcosine: no modulation window"):     # it changes the fused head itself
        BALANCERS.create("mmcosine", end_epoch=3)


# -- AGM: conditional clip and input-zeroing coalitions ------------------------------------------
def clip_case(fusion_peak: float, *, bias_peak: float = 0.0, enabled: bool = True):
    """AGM after a backward whose fusion gradients peak at ``fusion_peak`` and total norm is large."""
    model, batch, agm, objective, _ = setup("agm", {"clip_on_fusion_grad": enabled})
    begin(agm, model, 0)
    outputs, _, _ = backward(model, batch, agm, objective)
    for name, p in model.named_parameters():
        p.grad = torch.full_like(p, 0.5 if name.startswith("encoders") else 0.0)  # total norm >> 1, all |g| <= 1
    model.fusion.parts["audio"].weight.grad[0, 0] = fusion_peak
    model.fusion.bias.grad[0] = bias_peak
    trace = agm.after_backward(model, outputs, batch["label"])
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    return trace.get("clip/fusion"), norm.item()


def test_agm_clips_the_total_norm_to_one_only_when_a_fusion_gradient_exceeds_one():
    flag, norm = clip_case(1.5)
    assert flag == 1.0 and norm == pytest.approx(1.0, abs=1e-5)
    for peak, kw in ((0.9, {}), (-0.99, {}), (0.0, {"bias_peak": 5.0})):   # the late sum's bias is not checked
        flag, norm = clip_case(peak, **kw)
        assert flag == 0.0 and norm > 10
    assert clip_case(-1.5)[0] == 1.0
    flag, norm = clip_case(1.5, enabled=False)
    assert flag is None and norm > 10


def warmed_batchnorm_model():
    """An AGM set-up with BatchNorm encoders whose running statistics moved (eval mode != train mode)."""
    model, batch, agm, objective, opt = setup("agm", {"coalition": "inputs"}, batchnorm=True)
    assert any(isinstance(x, nn.BatchNorm2d) for x in model.encoders["audio"].modules())
    with torch.no_grad():
        for _ in range(3):
            model({m: 3 * torch.randn_like(x) + 1 for m, x in batch.items() if m != "label"})
    return model, batch, agm, objective


def test_agm_input_coalitions_run_the_encoders_on_zeros_in_eval_mode_as_a_hand_computation():
    model, batch, agm, objective = warmed_batchnorm_model()
    seen = []
    model.encoders["audio"].register_forward_pre_hook(
        lambda module, args: seen.append((bool((args[0] == 0).all()), module.training)))
    begin(agm, model, 0)
    state = copy.deepcopy(model.state_dict())                                  # BatchNorm statistics before the step
    outputs, _, _ = backward(model, batch, agm, objective)
    assert (True, False) in seen and (False, True) in seen and model.training    # zeros in eval mode, then restored
    model.load_state_dict(state)
    with torch.no_grad():                                                       # phi_a = (f(a,v) - f(0a,v) + f(a,0v))/2
        full = model(batch)
        model.eval()
        _, zeros = model.encode({m: torch.zeros_like(batch[m]) for m in model.modalities})
        f = lambda a, v: model.fusion({"audio": a, "video": v})                  # noqa: E731
        a, v = full["features"]["audio"], full["features"]["video"]
        phi = {"audio": (full["logits"]["mm"] - f(zeros["audio"], v) + f(a, zeros["video"])) / 2,
               "video": (full["logits"]["mm"] - f(a, zeros["video"]) + f(zeros["audio"], v)) / 2}
    for m in model.modalities:
        hand = -torch.log_softmax(phi[m], 1).gather(1, batch["label"][:, None]).mean()
        assert agm._trace[f"score/{m}"].item() == pytest.approx(hand.item(), rel=1e-5)


def test_agm_feature_and_input_coalitions_differ_on_batchnorm_encoders():
    model, batch, agm, objective = warmed_batchnorm_model()
    begin(agm, model, 0)
    outputs, _, _ = backward(model, batch, agm, objective)
    by_inputs = {m: agm._trace[f"score/{m}"].item() for m in model.modalities}
    agm.coalition, agm.running, agm.steps = "features", None, 0
    backward(model, batch, agm, objective)
    by_features = {m: agm._trace[f"score/{m}"].item() for m in model.modalities}
    assert all(abs(by_inputs[m] - by_features[m]) > 1e-3 for m in model.modalities)
    values = coalition_logits(model.fusion, outputs["features"], None)          # zero features: f(empty) = bias
    assert torch.allclose(values[frozenset()], model.fusion.bias.expand(len(batch["label"]), -1))


# -- PMR: affine-free batch norm and prototype momentum --------------------------------------------
def test_pmr_with_normalisation_and_momentum_equals_a_hand_computation():
    n, alpha, mu = 8, 1.5, 0.2
    loader = [{"audio": torch.randn(n, *SHAPES["audio"]), "video": torch.randn(n, *SHAPES["video"]),
               "label": torch.arange(n) % 4} for _ in range(2)]
    model, batch, pmr, objective, _ = setup("pmr", {"alpha": alpha, "normalize_features": True, "momentum": mu,
                                                    "refresh_fraction": 0.5})
    bn = lambda z: (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)     # noqa: E731
    def means(batches):                                                        # (C, D) class means of normalised z
        model.eval()
        with torch.no_grad():
            z = {m: torch.cat([bn(model.encode(b)[1][m]) for b in batches]) for m in model.modalities}
        y = torch.cat([b["label"] for b in batches])
        return {m: torch.stack([z[m][y == c].mean(0) for c in range(4)]) for m in z}
    begin(pmr, model, 0, loader)
    first = means(loader)
    assert all(torch.allclose(pmr.prototypes[m], first[m], atol=1e-5) for m in first)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))                                 # the encoders moved during epoch 0
    begin(pmr, model, 1, loader)                                               # refresh: 1 of 2 batches, momentum
    second = {m: (1 - mu) * v + mu * first[m] for m, v in means(loader[:1]).items()}
    assert all(torch.allclose(pmr.prototypes[m], second[m], atol=1e-5) for m in second)
    model.train()
    outputs = pmr.forward(model, batch)
    plain = objective(outputs["logits"], batch["label"])
    total = pmr.loss(outputs, batch["label"], plain)["total"]
    y = batch["label"]
    logits = {m: -torch.cdist(bn(outputs["features"][m]), second[m]) for m in model.modalities}     # (B, C)
    s = {m: torch.softmax(logits[m], 1)[torch.arange(n), y].sum() for m in logits}
    weaker = "audio" if s["audio"] < s["video"] else "video"
    hand = plain["total"] + alpha * F.cross_entropy(logits[weaker], y)
    assert total.item() == pytest.approx(hand.item(), rel=1e-5)
    assert pmr._trace[f"coeff/{weaker}"] == alpha and pmr.state_dict()["prototypes"] is pmr.prototypes


# -- MSLR: gradient form (the reference) against the update form -------------------------------------
def mslr_step(acts_on: str, optim: OptimConfig, rates=(0.5, 2.0)):
    """(encoder and fusion-part parameter changes, unscaled gradients, lr) after one MSLR step."""
    model, batch, mslr, objective, optimizer = setup("mslr", {"acts_on": acts_on, "init_scale": dict(
        zip(("audio", "video"), rates))}, optim=optim)
    begin(mslr, model, 0)
    outputs, _, grads = backward(model, batch, mslr, objective)
    mslr.after_backward(model, outputs, batch["label"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for group in optimizer.param_groups:                                       # the trainer's per-group lr
        group["lr"] = optim.lr * group["lr_scale"]
    optimizer.step()
    delta = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    return delta, grads


def test_mslr_gradient_form_is_the_reference_update_under_plain_sgd():
    sgd = OptimConfig(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0)
    for form in ("gradient", "update"):
        delta, grads = mslr_step(form, sgd)
        for name, rate in (("encoders.audio", 0.5), ("encoders.video", 2.0)):
            keys = [k for k in grads if k.startswith(name)]
            assert keys and all(torch.allclose(delta[k], -0.1 * rate * grads[k], atol=1e-7) for k in keys)
        part = "fusion.parts.video.weight"                                     # the reference leaves the fusion alone
        assert torch.allclose(delta[part], -0.1 * (2.0 if form == "update" else 1.0) * grads[part], atol=1e-7)


def test_mslr_gradient_form_is_largely_cancelled_by_adam_and_the_update_form_is_not():
    adam = OptimConfig(name="adam", lr=1e-3, weight_decay=0.0)
    plain, _ = mslr_step("gradient", adam, rates=(1.0, 1.0))

    def video(delta):
        return torch.cat([v.flatten() for k, v in delta.items() if k.startswith("encoders.video")]).norm()

    def size(delta):                                                           # video encoder step, rate 2 / rate 1
        return (video(delta) / video(plain)).item()
    assert size(mslr_step("gradient", adam)[0]) == pytest.approx(1.0, abs=0.02)    # Adam divides the rate out
    assert size(mslr_step("update", adam)[0]) == pytest.approx(2.0, abs=0.02)      # a learning rate it keeps


# -- MLB: the reference scope on FiLM and transformer fusion -----------------------------------------
@pytest.mark.parametrize("fusion", ["film", "transformer", "gated"])
def test_mlb_reference_scope_leaves_film_and_transformer_parts_unscaled(fusion):
    for scope in ("mmbal", "reference"):
        model, batch, mlb, objective, _ = setup("mlb", {"alpha": 2.0, "scope": scope}, fusion=fusion, seed=1)
        begin(mlb, model, 0)
        outputs, _, before = backward(model, batch, mlb, objective)
        trace = mlb.after_backward(model, outputs, batch["label"])
        parts_scaled = scope == "mmbal" or fusion == "gated"          # the code's names match gated's parts only
        checked = 0
        for m in model.modalities:
            k = trace[f"coeff/{m}"].item()
            assert abs(k - 1) > 1e-3
            for prefix, scaled in ((f"encoders.{m}.", True), (f"fusion.parts.{m}.", parts_scaled)):
                for name, p in model.named_parameters():
                    if name.startswith(prefix) and name in before:
                        checked += prefix.startswith("fusion")
                        assert torch.allclose(p.grad, before[name] * (k if scaled else 1.0), rtol=1e-5, atol=1e-9), name
        assert checked >= 2                                             # the parts' weight and bias at least


# -- presets: every setting with its source -------------------------------------------------------
def test_paper_presets_name_the_reference_settings_with_their_sources():
    table = get_preset("cremad_resnet18").hyperparameters()
    row = lambda method, parameter, fusion="all": table[(table.method == method) & (table.parameter == parameter)
                                                        & (table.fusion == fusion)].iloc[0]           # noqa: E731
    expected = {("agm", "clip_on_fusion_grad"): "True", ("agm", "coalition"): "inputs",
                ("pmr", "normalize_features"): "True", ("pmr", "momentum"): "0.0", ("pmr", "end_epoch"): "71",
                ("mslr", "acts_on"): "gradient", ("ogm", "end_epoch"): "None", ("mlb", "scope"): "reference"}
    for (method, parameter), value in expected.items():
        assert row(method, parameter).value == value, (method, parameter)
        assert row(method, parameter).source != DEFAULT_SOURCE, (method, parameter)
    digits = get_preset("digits_av").hyperparameters()
    assert digits[(digits.method == "mslr") & (digits.parameter == "acts_on")].value.item() == "update"
