"""Fusions: every encoder x fusion pair works, parameters split into disjoint groups, and each
fusion computes the function it documents (paper §5)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbal.models import ENCODERS, FUSIONS, MultimodalModel
from mmbal.models.fusion import FiLMFusion, GatedFusion, MLPFusion, TransformerFusion

SHAPES = {"audio": (1, 16, 12), "video": (1, 3, 16, 16)}
ENCODER_OPTIONS = {
    "small_cnn": {"width": 4, "out_dim": 16},
    "resnet18": {"layers": (1, 1, 1, 1)},
    "conformer": {"d_model": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "kernel_size": 3,
                  "frame_width": 4, "frame_dim": 8, "bottleneck": None},
}
FUSION_OPTIONS = {"transformer": {"d_model": 16, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
                  "mlp": {"hidden": 8}, "gated": {"hidden": 8}}
C = 5


@pytest.fixture(scope="module")
def encoders():
    """One tiny encoder pair per family, shared by the fusion tests (fusions are rebuilt per test)."""
    torch.manual_seed(0)
    return {family: {m: ENCODERS.create(family, modality=m, input_shape=s, **opts) for m, s in SHAPES.items()}
            for family, opts in ENCODER_OPTIONS.items()}


def batch(b=4):
    g = torch.Generator().manual_seed(1)
    return {m: torch.randn(b, *s, generator=g) for m, s in SHAPES.items()}


def make_fusion(name, dims, modalities=("audio", "video"), **kw):
    return FUSIONS.create(name, modalities=modalities, dims=dims, num_classes=C,
                          **{**FUSION_OPTIONS.get(name, {}), **kw})


def features(dims, b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, d, generator=g) for m, d in dims.items()}


@pytest.mark.parametrize("fusion", FUSIONS.names())
@pytest.mark.parametrize("family", list(ENCODER_OPTIONS))
def test_every_encoder_fusion_pair(encoders, family, fusion):
    torch.manual_seed(0)
    enc = encoders[family]
    model = MultimodalModel(enc, make_fusion(fusion, {m: e.out_dim for m, e in enc.items()}), C)
    model.zero_grad(set_to_none=True)
    out = model(batch())
    # output shapes
    assert {k: tuple(v.shape) for k, v in out["logits"].items()} == {"mm": (4, C), "audio": (4, C),
                                                                     "video": (4, C)}
    split = model.fusion.unimodal_logits(out["features"], out["tokens"])
    assert {k: tuple(v.shape) for k, v in split.items()} == {"audio": (4, C), "video": (4, C)}
    # the fused loss alone reaches both encoders
    F.cross_entropy(out["logits"]["mm"], torch.arange(4) % C).backward()
    for m in ("audio", "video"):
        grad = sum(p.grad.abs().sum() for p in model.encoders[m].parameters() if p.grad is not None)
        assert grad > 0, f"{family}+{fusion}: no gradient reaches the {m} encoder"
    # every parameter in exactly one group
    groups = model.parameter_groups()
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)), f"{family}+{fusion}: a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}, f"{family}+{fusion}: a parameter has no group"
    assert groups["fusion:audio"], f"{fusion}: audio has no fusion part"


def test_late_fusions_split_exactly_into_unimodal_logits():
    dims = {"audio": 6, "video": 4}
    z = features(dims)
    for name in ("sum", "concat"):
        fusion = make_fusion(name, dims)
        split = fusion.unimodal_logits(z)
        torch.testing.assert_close(split["audio"] + split["video"], fusion(z))
    fusion = make_fusion("sum", dims)
    torch.testing.assert_close(fusion.unimodal_logits(z)["video"], fusion.parts["video"](z["video"]))


def test_mlp_fusion_is_the_papers_mid_mlp():
    dims = {"audio": 6, "video": 4}
    z = features(dims)
    fusion = MLPFusion(("audio", "video"), dims, C, hidden=8).eval()
    h = z["audio"] @ fusion.parts["audio"].weight.T + z["video"] @ fusion.parts["video"].weight.T + fusion.bias
    lin1, lin2 = fusion.mlp[2], fusion.mlp[5]
    expected = lin2(torch.relu(lin1(torch.relu(h))))
    torch.testing.assert_close(fusion(z), expected)
    # default unimodal logits: the fused head with the other modality's features set to zero
    zeroed = {"audio": z["audio"], "video": torch.zeros_like(z["video"])}
    torch.testing.assert_close(fusion.unimodal_logits(z)["audio"], fusion(zeroed))


def test_film_audio_conditions_video_as_defined():
    dims = {"audio": 6, "video": 4}
    z = features(dims)
    fusion = FiLMFusion(("audio", "video"), dims, C)
    assert (fusion.conditioner, fusion.target) == ("audio", "video")
    gen = fusion.parts["audio"]
    gamma, beta = (z["audio"] @ gen.weight.T + gen.bias).split(4, dim=1)
    torch.testing.assert_close(fusion(z), fusion.classifier(gamma * z["video"] + beta))
    assert "video" not in fusion.parts                  # the classifier sees the fused feature: shared
    swapped = FiLMFusion(("audio", "video"), dims, C, conditioner="video")
    assert swapped.parts["video"].out_features == 2 * dims["audio"]


def test_residual_film_is_identity_at_zero_modulation():
    dims = {"audio": 6, "video": 4}
    z = features(dims)
    fusion = FiLMFusion(("audio", "video"), dims, C, residual=True)
    assert torch.count_nonzero(fusion.parts["audio"].weight) == 0     # starts at zero modulation
    torch.testing.assert_close(fusion(z), fusion.classifier(z["video"]))
    z2 = {"audio": 10 * z["audio"] + 3, "video": z["video"]}          # audio has no effect yet
    torch.testing.assert_close(fusion(z2), fusion(z))
    with torch.no_grad():
        fusion.parts["audio"].bias[:4] = 1.0                          # gamma = 1 + 1 = 2
    torch.testing.assert_close(fusion(z), fusion.classifier(2 * z["video"]))


def test_gated_fusion_gates_are_in_unit_interval_and_gate_the_video_projection():
    dims = {"audio": 6, "video": 4}
    z = features(dims, b=64)
    z["audio"] = 5 * z["audio"]
    fusion = GatedFusion(("audio", "video"), dims, C, hidden=8)
    gates = torch.sigmoid(fusion.parts["audio"](z["audio"]))          # sigmoid(A z_a), A = parts[gate]
    assert gates.shape == (64, 8)
    assert gates.min() > 0 and gates.max() < 1 and gates.std() > 0.1
    expected = fusion.classifier(gates * fusion.parts["video"](z["video"]))
    torch.testing.assert_close(fusion(z), expected)
    closed = {"audio": z["audio"], "video": z["video"]}
    with torch.no_grad():
        fusion.parts["audio"].bias.fill_(-1e4)                        # gates closed -> bias only
    torch.testing.assert_close(fusion(closed), fusion.classifier.bias.expand(64, C))


def test_transformer_fusion_unimodal_logits_attend_to_one_modality():
    torch.manual_seed(0)
    dims = {"audio": 6, "video": 4}
    fusion = TransformerFusion(("audio", "video"), dims, C, d_model=8, num_heads=2, num_layers=1).eval()
    tokens = {"audio": torch.randn(3, 5, 6), "video": torch.randn(3, 7, 4)}
    feats = {m: t.mean(1) for m, t in tokens.items()}
    fused = fusion(feats, tokens)
    assert fused.shape == (3, C)
    other = {"audio": tokens["audio"], "video": torch.randn(3, 2, 4)}   # any number of tokens
    split, split2 = fusion.unimodal_logits(feats, tokens), fusion.unimodal_logits(feats, other)
    torch.testing.assert_close(split["audio"], split2["audio"])
    assert not torch.allclose(fusion(feats, other), fused)
    with pytest.raises(ValueError, match="token sequences"):
        fusion(feats)


@pytest.mark.parametrize("name", ["film", "gated"])
def test_two_modality_fusions_reject_other_counts(name):
    dims = {"audio": 4, "video": 4, "flow": 4}
    with pytest.raises(ValueError, match="exactly 2 modalities"):
        make_fusion(name, dims, modalities=("audio", "video", "flow"))
    with pytest.raises(ValueError, match="must be one of"):
        make_fusion(name, {"audio": 4, "video": 4}, **{"conditioner" if name == "film" else "gate": "text"})


@pytest.mark.parametrize("name", ["sum", "concat", "mlp", "transformer"])
def test_many_modality_fusions_take_three_and_refuse_one(name):
    dims = {"audio": 4, "video": 6, "flow": 5}
    fusion = make_fusion(name, dims, modalities=tuple(dims))
    tokens = {m: torch.randn(2, 3, d) for m, d in dims.items()}
    assert fusion({m: t.mean(1) for m, t in tokens.items()}, tokens).shape == (2, C)
    assert set(fusion.parts) == set(dims)
    with pytest.raises(ValueError, match="2 or more modalities"):
        make_fusion(name, {"audio": 4}, modalities=("audio",))
