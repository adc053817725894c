"""Property tests (hypothesis): every coefficient is finite, within its method's bounds, and symmetric."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbal.balancers import mlb_coefficients, mlb_ratios, mslr_rates, ogm_coefficients, true_class_probability
from mmbal.balancers.mslr import MIN_PAST_ACCURACY
from mmbal.balancers.agm import agm_coefficients, agm_ratios, agm_scores
from mmbal.balancers.mmcosine import cosine_logits
from mmbal.balancers.pmr import pmr_weights

SETTINGS = settings(max_examples=60, deadline=None)
alphas = st.floats(0.0, 10.0)
betas = st.floats(0.05, 50.0)
# Scores as the heads produce them: probabilities, including exactly 0 and 1.
scores = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))
logit_values = st.one_of(st.floats(-1e4, 1e4), st.sampled_from([-1e4, 0.0, 1e4]))


@st.composite
def logits_and_labels(draw, batch=st.integers(1, 6), classes=st.integers(2, 5)):
    b, c = draw(batch), draw(classes)
    values = draw(st.lists(logit_values, min_size=b * c, max_size=b * c))
    labels = draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b))
    return torch.tensor(values, dtype=torch.float32).reshape(b, c), torch.tensor(labels)


def _finite(values) -> bool:
    return all(math.isfinite(float(v)) for v in values)


@st.composite
def two_heads(draw):
    """Audio and video head logits of one batch (same labels), random or extreme."""
    (la, labels), c = draw(logits_and_labels()), None
    c = la.shape[1]
    values = draw(st.lists(logit_values, min_size=la.numel(), max_size=la.numel()))
    return la, torch.tensor(values, dtype=torch.float32).reshape(-1, c), labels


@SETTINGS
@given(heads=two_heads(), alpha=alphas, beta=st.one_of(st.none(), betas))
def test_mlb_coefficients_are_finite_and_bounded_for_any_logits(heads, alpha, beta):
    la, lv, y = heads
    s = {"audio": true_class_probability(la, y), "video": true_class_probability(lv, y)}
    r = mlb_ratios(s)
    k = mlb_coefficients(s, alpha, beta)
    assert _finite(k.values()) and _finite(r.values())
    for m in k:
        if r[m] <= 1:                                        # decelerated (or untouched): (0, 1]
            assert 0.0 <= k[m] <= 1.0
        elif beta is None:                                   # accelerated: [1, 2)
            assert 1.0 <= k[m] <= 2.0
        else:                                                # capped accelerating branch
            assert min(1.0, beta) - 1e-6 <= k[m] <= max(1.0, beta) + 1e-6


@SETTINGS
@given(sa=scores, sv=scores, alpha=alphas, beta=st.one_of(st.none(), betas))
def test_swapping_modalities_swaps_coefficients(sa, sv, alpha, beta):
    k = mlb_coefficients({"audio": torch.tensor(sa), "video": torch.tensor(sv)}, alpha, beta)
    swapped = mlb_coefficients({"audio": torch.tensor(sv), "video": torch.tensor(sa)}, alpha, beta)
    assert k["audio"] == swapped["video"] and k["video"] == swapped["audio"]
    _, ko = ogm_coefficients({"audio": torch.tensor(sa), "video": torch.tensor(sv)}, alpha)
    _, ko_swapped = ogm_coefficients({"audio": torch.tensor(sv), "video": torch.tensor(sa)}, alpha)
    assert ko["audio"] == ko_swapped["video"] and ko["video"] == ko_swapped["audio"]
    ra = agm_ratios({"audio": torch.tensor(sa), "video": torch.tensor(sv)})
    ra_swapped = agm_ratios({"audio": torch.tensor(sv), "video": torch.tensor(sa)})
    assert ra["audio"] == ra_swapped["video"]
    _, wb = pmr_weights({"audio": torch.tensor(sa), "video": torch.tensor(sv)}, alpha)
    _, wb_swapped = pmr_weights({"audio": torch.tensor(sv), "video": torch.tensor(sa)}, alpha)
    assert wb["audio"] == wb_swapped["video"]


@SETTINGS
@given(s=scores, n=st.integers(2, 5), alpha=alphas, beta=st.one_of(st.none(), betas))
def test_mlb_is_exactly_one_at_equal_scores(s, n, alpha, beta):
    k = mlb_coefficients({f"m{i}": torch.tensor(s) for i in range(n)}, alpha, beta)
    assert all(v.item() == 1.0 for v in k.values())


@SETTINGS
@given(values=st.lists(scores, min_size=2, max_size=4), alpha=alphas)
def test_ogm_never_raises_a_coefficient_above_one(values, alpha):
    rho, k = ogm_coefficients({f"m{i}": torch.tensor(v) for i, v in enumerate(values)}, alpha)
    assert _finite(k.values()) and _finite(rho.values())
    assert all(0.0 <= v <= 1.0 for v in k.values())
    if len(values) == 2:                                             # only the dominant one slows down
        assert sum(v < 1.0 for v in k.values()) <= 1


@SETTINGS
@given(a=logits_and_labels(batch=st.just(4), classes=st.just(3)),
       v=logits_and_labels(batch=st.just(4), classes=st.just(3)),
       running=st.tuples(st.floats(0, 20), st.floats(0, 20)), alpha=st.floats(0.0, 8.0))
def test_agm_coefficients_are_finite_and_capped(a, v, running, alpha):
    s = agm_scores({"audio": a[0], "video": v[0]}, a[1])
    assert all(0 <= x <= -math.log(1e-8) + 1e-4 for x in s.values())       # -log of a clamped probability
    r = agm_ratios(s)
    targets = agm_ratios({"audio": torch.tensor(running[0]), "video": torch.tensor(running[1])})
    k = agm_coefficients(r, targets, alpha)
    assert _finite(k.values())
    assert all(0.0 <= x <= math.exp(10 * alpha) * (1 + 1e-5) for x in k.values())


@SETTINGS
@given(values=st.lists(scores, min_size=2, max_size=3), alpha=alphas)
def test_pmr_weights_are_zero_or_alpha(values, alpha):
    rho, beta = pmr_weights({f"m{i}": torch.tensor(v) for i, v in enumerate(values)}, alpha)
    assert _finite(rho.values())
    assert all(b.item() in (0.0, torch.tensor(alpha).item()) for b in beta.values())
    assert any(b == 0 for b in beta.values())                              # the leader never gets it


@SETTINGS
@given(history=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=8),
       keep=st.integers(1, 4), init=st.tuples(st.floats(0.1, 2), st.floats(0.1, 2)))
def test_mslr_rates_are_finite_positive_and_follow_the_latest_accuracy(history, keep, init):
    acc = {"audio": [h[0] for h in history], "video": [h[1] for h in history]}
    ratios, rates = mslr_rates(acc, keep_memory=keep, init_scale={"audio": init[0], "video": init[1]})
    assert _finite(rates.values()) and all(r >= 0 for r in rates.values())
    for i, m in enumerate(("audio", "video")):
        past = acc[m][-1 - keep:-1]
        if len(acc[m]) > keep and sum(past) / keep >= MIN_PAST_ACCURACY:
            assert math.isclose(ratios[m], acc[m][-1] / (sum(past) / keep), rel_tol=1e-9)
        else:
            assert ratios[m] == 1.0
        assert math.isclose(rates[m], init[i] * ratios[m], rel_tol=1e-9)


@SETTINGS
@given(z=logits_and_labels(batch=st.just(3), classes=st.just(4)), scale=st.floats(0.1, 30))
def test_mmcosine_logits_are_bounded_by_the_scale(z, scale):
    features = z[0].clamp(-1e3, 1e3)
    weight = torch.randn(5, 4)
    out = cosine_logits(features, weight, scale)
    assert torch.isfinite(out).all() and out.abs().max() <= scale * (1 + 1e-5)
