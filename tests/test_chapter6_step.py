"""Chapter 6's from-scratch MLB and OGM-GE steps agree with mmbal's trainer, and its method figure is up to date.

The step code lives once, in the chapter: the cells that start with ``# mlb-step-from-scratch`` (the steps) and
``# side-by-side`` (the harness) are read with nbformat and executed here, so the test fails as soon as either
the chapter's code or mmbal's balancers drift.
"""
import runpy
from functools import partial
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from mmbal.data import DATASETS

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "book" / "06_gradient_modulation.ipynb"
STEPS = 6


def chapter_cell(marker: str) -> str:
    cells = [c.source for c in nbformat.read(CHAPTER, as_version=4).cells
             if c.cell_type == "code" and c.source.startswith(marker)]
    assert len(cells) == 1, f"{CHAPTER.name}: expected one code cell starting with {marker!r}, found {len(cells)}"
    return cells[0]


@pytest.fixture(scope="module")
def chapter():
    """The chapter's step functions and harness, executed in one namespace (one torch thread)."""
    torch.set_num_threads(1)
    namespace = {}
    exec(chapter_cell("# mlb-step-from-scratch"), namespace)
    exec(chapter_cell("# side-by-side"), namespace)
    return namespace


@pytest.fixture(scope="module")
def splits():
    return DATASETS.create("digits_av", seed=0)


def assert_same_weights(theirs, ours):
    for (name, a), b in zip(theirs.named_parameters(), ours.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}")


def same_steps(chapter, splits, balancer: str, objective: str, step: str, alpha: float):
    """Run the chapter's step beside mmbal's; assert equal weights and coefficients; -> (steps, 2) mmbal's k, table."""
    table, theirs, ours = chapter["side_by_side"](splits, balancer, objective, chapter[step], steps=STEPS, alpha=alpha)
    assert_same_weights(theirs, ours)
    for m in ("audio", "video"):
        np.testing.assert_allclose(table[f"k_{m} ours"], table[f"k_{m} mmbal"], rtol=1e-6, atol=0)
    return table[["k_audio mmbal", "k_video mmbal"]].to_numpy(), table


def test_mlb_step_from_scratch_equals_mmbal(chapter, splits):
    k, table = same_steps(chapter, splits, "mlb", "multi_loss", "mlb_step", alpha=1.0)
    assert (np.abs(k - 1) > 1e-3).any() and ((k > 0) & (k < 2)).all()     # MLB really modulated, k in (0, 2)
    assert (table["max |Δθ|"] <= 1e-6).all()


def test_ogm_ge_step_from_scratch_equals_mmbal(chapter, splits):
    k, _ = same_steps(chapter, splits, "ogm_ge", "joint", "ogm_ge_step", alpha=0.8)
    assert (k <= 1).all() and ((k < 1).sum(axis=1) == 1).all()               # one dominant encoder slowed per step


def test_the_comparison_catches_a_different_step(chapter, splits):
    """The harness is sensitive: MLB without modulation, or OGM-GE without its noise, leaves mmbal's weights."""
    table, _, _ = chapter["side_by_side"](splits, "mlb", "multi_loss", lambda *a, alpha: chapter["mlb_step"](*a, alpha=0.0),
                                          steps=2, alpha=1.0)
    assert table["max |Δθ|"].iloc[-1] > 1e-5
    table, _, _ = chapter["side_by_side"](splits, "ogm_ge", "joint", partial(chapter["ogm_ge_step"], noise=False),
                                          steps=2, alpha=0.8)
    assert table["max |Δθ|"].iloc[-1] > 1e-5


def test_method_figure_is_up_to_date(tmp_path):
    """Re-rendering the figure gives the committed SVG byte for byte (a deterministic file)."""
    draw = runpy.run_path(str(ROOT / "scripts" / "draw_method_figure.py"))["draw"]
    fresh = draw(tmp_path / "mlb_method.svg").read_bytes()
    assert fresh == draw(tmp_path / "again.svg").read_bytes(), "the figure is not deterministic"
    committed = ROOT / "book" / "images" / "mlb_method.svg"
    assert fresh == committed.read_bytes(), "book/images/mlb_method.svg is stale: run scripts/draw_method_figure.py"
