"""Model ownership groups, objectives and metrics of the core package."""
import pytest
import torch
from sklearn.metrics import f1_score

from mmbal.metrics import expected_calibration_error, macro_f1
from mmbal.models import build_model
from mmbal.objectives import OBJECTIVES
from mmbal.registry import Registry, UnknownNameError

SHAPES = {"audio": (1, 16, 8), "video": (1, 2, 8, 8)}


def test_parameter_groups_cover_every_parameter_exactly_once():
    model = build_model(input_shapes=SHAPES, num_classes=5)
    seen = [id(p) for ps in model.parameter_groups().values() for p in ps]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in model.parameters()}
    assert [p.shape for p in model.parameter_groups()["fusion:audio"]] == [torch.Size([5, 64])]


def test_forward_returns_logits_keyed_by_head_and_works_for_three_modalities():
    shapes = {**SHAPES, "flow": (2, 2, 8, 8)}
    model = build_model(input_shapes=shapes, num_classes=3)
    batch = {m: torch.randn(4, *s) for m, s in shapes.items()}
    out = model(batch)
    assert set(out["logits"]) == {"mm", "audio", "video", "flow"}
    assert all(v.shape == (4, 3) for v in out["logits"].values())


def test_joint_heads_are_probes_that_do_not_train_the_encoders():
    torch.manual_seed(0)
    model = build_model(input_shapes=SHAPES, num_classes=3)
    OBJECTIVES.create("joint").configure(model)
    batch = {m: torch.randn(4, *s) for m, s in SHAPES.items()}
    out = model(batch)
    F = torch.nn.functional
    F.cross_entropy(out["logits"]["audio"], torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is None for p in model.encoders.parameters())
    assert model.heads["audio"].weight.grad.abs().sum() > 0


def test_wrong_input_shape_names_the_expected_shape():
    model = build_model(input_shapes=SHAPES, num_classes=3)
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 1, \*, \*, \*\)"):
        model({"audio": torch.randn(2, 1, 16, 8), "video": torch.randn(2, 3, 2, 8, 8)})


def test_macro_f1_matches_sklearn():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    expected = f1_score(labels, logits.argmax(1), average="macro")
    assert macro_f1(logits, labels, 4) == pytest.approx(expected)


def test_ece_hand_computed():
    # two samples with confidence 0.9 (one right, one wrong) and one with 0.6 (right):
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 1])
    ece = expected_calibration_error(probs.log(), labels)
    assert ece == pytest.approx(2 / 3 * abs(0.5 - 0.9) + 1 / 3 * abs(1.0 - 0.6), abs=1e-6)


def test_registry_creates_classes_and_factories_and_validates_their_options():
    things = Registry("thing")

    @things.register("base")
    class Base:
        """A base thing.

        More text."""

        def __init__(self, *, size: int = 2):
            self.size = size

    @things.register("child")
    class Child(Base):
        """A child that passes **base on."""

        def __init__(self, colour: str, *, shade: float = 0.5, **base):
            super().__init__(**base)
            self.colour, self.shade = colour, shade

    @things.register("made")
    def made(n: int = 3, **anything):
        """A factory."""
        return ("made", n, anything)

    child = things.create("child", colour="red", size=7)
    assert (child.colour, child.shade, child.size) == ("red", 0.5, 7)
    assert things.defaults("child") == {"shade": 0.5, "size": 2}
    assert things.create("made", n=1, extra=True) == ("made", 1, {"extra": True})   # open-ended factory
    assert things.describe() == {"base": "A base thing.", "child": "A child that passes **base on.",
                                 "made": "A factory."}
    assert things.names() == ["base", "child", "made"] and "made" in things and "other" not in things
    with pytest.raises(ValueError, match=r"thing 'child': unknown options \['weight'\]; valid options: colour, "
                                         r"shade, size"):
        things.create("child", colour="red", weight=1)
    with pytest.raises(ValueError, match=r"thing 'child': missing options \['colour'\]"):
        things.create("child")
    with pytest.raises(UnknownNameError, match="unknown thing 'other'; valid thing names: base, child, made"):
        things.create("other")
    with pytest.raises(ValueError, match="registered twice"):
        things.register("made")(made)
