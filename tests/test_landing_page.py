"""The landing page (book/intro.ipynb) states only what the committed files say.

Its code cells run here as they run at build time (cwd book/, values glued into the prose captured); every
headline value is recomputed independently from the run JSONs and must agree. The chapter map links every
page of _toc.yml, the prose holds no typed numbers, and the step rate it converts to GPU-hours is the README's.
"""
import json
import os
import re
import sys
from pathlib import Path

import myst_nb
import nbformat
import numpy as np
import pytest
import yaml

from mmbal.presets import ROWS, reference_numbers
from mmbal.tables import format_pm
from test_chapter_numbers import NUMBER_IN_PROSE, prose

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
PAGE = BOOK / "intro.ipynb"
RUNS = BOOK / "results" / "digits_av_v2" / "runs"


def cells(kind: str) -> list[str]:
    return [c.source for c in nbformat.read(PAGE, as_version=4).cells if c.cell_type == kind]


@pytest.fixture(scope="module")
def glued() -> dict:
    """Name -> value of every glue() call of the page's code cells, run in order as the build runs them."""
    got, cwd, path = {}, os.getcwd(), list(sys.path)
    original = myst_nb.glue
    myst_nb.glue = lambda name, value, display=True: got.__setitem__(name, getattr(value, "data", value))
    try:
        os.chdir(BOOK)
        sys.path.insert(0, str(BOOK))
        namespace = {}
        for source in cells("code"):
            exec(compile(source, str(PAGE), "exec"), namespace)
    finally:
        myst_nb.glue, sys.path[:] = original, path
        os.chdir(cwd)
    return got


def records(method: str, fusion: str = "concat") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RUNS.glob(f"{method}__{fusion}__seed*.json"))]


def fused_accuracy(method: str, fusion: str = "concat") -> dict[int, float]:
    """Seed -> fused test accuracy, straight from the run files (not from summary.csv)."""
    return {r["cell"]["seed"]: r["test"]["mm"]["accuracy"] for r in records(method, fusion)}


def test_headline_equals_the_aggregate_of_the_run_files(glued):
    for method in ("mlb", "joint", "multi_loss"):
        acc = np.array(list(fused_accuracy(method).values()))
        assert len(acc) >= 2, f"{method}: fewer than two committed seeds"
        assert glued[f"acc_{method}"] == format_pm(acc.mean(), acc.std()), method
    seeds = sorted(fused_accuracy("mlb"))
    assert glued["provenance"].startswith(f"{len(seeds)} seeds per row ({', '.join(map(str, seeds))})")
    fast = any(r["config"]["fast"] for m in ("mlb", "joint", "multi_loss") for r in records(m))
    assert ("full-length (not FAST) runs" in glued["provenance"]) == (not fast)


@pytest.mark.parametrize("baseline", ["joint", "multi_loss"])
def test_mlb_against_each_baseline_is_said_as_the_files_say(glued, baseline):
    mlb, base = fused_accuracy("mlb"), fused_accuracy(baseline)
    diffs = np.array([mlb[s] - base[s] for s in sorted(set(mlb) & set(base))])
    side = "above" if diffs.mean() > 0 else "below"
    said = glued[f"versus_{baseline}"]
    assert said.startswith(f"MLB is {abs(diffs.mean()) * 100:.1f} points {side} {ROWS[baseline].label.lower()}"), said
    assert f"higher on {int((diffs > 0).sum())} of {len(diffs)} paired seeds" in said
    noise = max(np.std(list(mlb.values())), np.std(list(base.values())))
    assert f"a gap {'within' if abs(diffs.mean()) <= noise else 'beyond'} the larger seed-to-seed std" in said


def test_the_held_back_video_encoder_is_said_as_the_files_say(glued):
    def probe(method):
        return {r["cell"]["seed"]: r["linear_probe"]["video"]["test_accuracy"] for r in records(method)}
    alone, joint = probe("unimodal_video"), probe("joint")
    diffs = np.array([alone[s] - joint[s] for s in sorted(set(alone) & set(joint))])
    assert len(diffs) >= 2
    said = glued["held_back"]
    assert said.startswith(f"a linear probe of the video encoder scores {diffs.mean() * 100:.1f} points lower"), said
    assert f"(mean over {len(diffs)} paired seeds, lower on {int((diffs > 0).sum())} of them)" in said


def test_best_row_and_mlb_rank_come_from_the_files(glued):
    means = {m: np.mean(list(fused_accuracy(m).values())) for m in
             {p.name.split("__")[0] for p in RUNS.glob("*__concat__seed*.json")}}
    ranked = sorted(means, key=means.get, reverse=True)
    assert f"the best is {ROWS[ranked[0]].label} (" in glued["best_row"]
    assert f"MLB ranks {ranked.index('mlb') + 1} of {len(ranked)}." in glued["best_row"]


def test_coefficient_sentence_matches_the_traces(glued):
    first, last = {}, {}
    for record in records("mlb"):
        trace = record["trace"]
        epoch = np.asarray(trace["epoch"])
        for m in ("audio", "video"):
            k = np.asarray(trace[f"coeff/{m}"], dtype=float)
            first.setdefault(m, []).append(k[epoch == epoch.min()].mean())
            last.setdefault(m, []).append(k[epoch == epoch.max()].mean())
    for m in ("audio", "video"):
        assert f"k for {m} averages {np.mean(first[m]):.2f} in the first epoch and {np.mean(last[m]):.2f} in the last" \
            in glued["k_sentence"]
    away = [abs(np.mean(last[m]) - 1) > abs(np.mean(first[m]) - 1) for m in ("audio", "video")]
    assert ("does not fade out" in glued["k_sentence"]) == all(away)


def test_reference_numbers_are_the_authors_and_their_ranking_is_computed(glued):
    for column, backbone in (("cremad_resnet18", "ResNet-18"), ("cremad_conformer", "Conformer")):
        reported = {m: v for m, v in reference_numbers(column).items() if v}
        best = max(reported, key=lambda m: reported[m][0])
        verdict = "the best row" if best == "mlb" else "not the best row"
        said = f"with {backbone} encoders MLB is {verdict} of the {len(reported)} reported"
        assert said in glued["reference_sentence"], glued["reference_sentence"]
    assert "kontras2025mcr" in "".join(cells("markdown")), "the reference numbers must cite their source"


def test_chapter_map_links_every_page_of_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    assert toc["root"] == "book/intro"
    linked = {"book/" + Path(t).with_suffix("").as_posix()
              for t in re.findall(r"\]\(([^)#:]+\.(?:ipynb|md))\)", "".join(cells("markdown")))}
    assert pages <= linked, f"chapters missing from the landing page's map: {sorted(pages - linked)}"
    assert linked <= pages, f"links to pages that are not in _toc.yml: {sorted(linked - pages)}"


def test_prose_holds_no_typed_numbers_and_no_stale_claims():
    text = "\n".join(cells("markdown"))
    bad = [m.group(0) for m in NUMBER_IN_PROSE.finditer(prose(text))]
    assert not bad, f"numbers typed into the landing page's prose: {bad}"
    assert "README" not in prose(text), "the HTML book has no README to point to"
    assert "images/mlb_method.svg" in text and (BOOK / "images" / "mlb_method.svg").exists()
    assert "{cite:t}`kontras2024mlb`" in text and "{cite:t}`kontras2025selfbalancing`" in text


def test_gpu_rate_is_the_one_the_readme_reports():
    code = "\n".join(cells("code"))
    rate = int(re.search(r'"samples_per_s": (\d+)', code).group(1))
    readme = re.search(r"ran at ([\d,]+) samples/s in fp32", (ROOT / "README.md").read_text())
    assert readme and int(readme.group(1).replace(",", "")) == rate
