"""Chapters never state a number without a result file behind it.

1. Every committed summary CSV equals the aggregate of its committed run JSONs, and every JSON is a
   cell of its preset's grid (nothing stray, nothing FAST among full results).
2. The table the chapters render (``paper_table`` of the CSV) shows exactly those aggregates, and the
   reference column exactly the stored reference data; tables without results say "not yet run".
3. The prose (markdown cells) of every chapter holds no typed result numbers:
   no "±", no percentages and no decimals (numbers are printed by code cells from the files).
"""
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from mmbal.presets import PRESETS, get_preset, reference_numbers
from mmbal.sweep import grid
from mmbal.tables import (NOT_RUN, format_pm, load_runs, paper_table, read_summary, summarize,
                          summary_path)

BOOK = Path(__file__).resolve().parent.parent / "book"
RESULTS = BOOK / "results"
CHAPTERS = sorted(BOOK.glob("[0-9]*.ipynb"))
COMMITTED = [t for t in PRESETS if summary_path(RESULTS, t).exists()]


@pytest.mark.parametrize("table", COMMITTED)
def test_summary_csv_equals_aggregate_of_jsons(table):
    runs = load_runs(RESULTS, table)
    assert not runs.empty, f"{table}: summary.csv without run JSONs"
    assert not runs["fast"].any(), f"{table}: FAST runs among the full results"
    cells = {(c.method, c.fusion, c.seed) for c in grid(table, fusions=get_preset(table).fusions)}
    stray = [p for p, m, f, s in zip(runs["path"], runs["method"], runs["fusion"], runs["seed"])
             if (m, f, s) not in cells or Path(p).name != f"{m}__{f}__seed{s}.json"]
    assert not stray, f"{table}: files that are not cells of the preset: {stray}"
    csv, fresh = read_summary(summary_path(RESULTS, table)), summarize(runs, table)
    assert list(zip(csv["method"], csv["fusion"])) == list(zip(fresh["method"], fresh["fusion"]))
    assert list(csv["n"]) == list(fresh["n"]) and list(csv["seeds"]) == list(fresh["seeds"])
    numeric = [c for c in fresh.columns if c.endswith(("_mean", "_std"))]
    assert set(numeric) <= set(csv.columns)
    np.testing.assert_allclose(csv[numeric].to_numpy(float), fresh[numeric].to_numpy(float), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("table", list(PRESETS))
def test_rendered_table_shows_only_file_values(table):
    preset = get_preset(table)
    summary = read_summary(summary_path(RESULTS, table)) if table in COMMITTED else pd.DataFrame()
    shown = paper_table(summary, table)
    main_col = f"this book ({preset.fusion})" if preset.reference else preset.fusion
    expected = {(preset.methods[r.method].label, r.fusion): format_pm(r.test_accuracy_mean, r.test_accuracy_std)
                for r in summary.itertuples()} if not summary.empty else {}
    for (method, fusion) in preset.cells():
        label = preset.methods[method].label
        value = shown.loc[label, main_col if fusion == preset.fusion else fusion]
        assert value == expected.get((label, fusion), NOT_RUN), (table, method, fusion, value)
    if preset.reference:
        ref = reference_numbers(preset.reference)
        for method, label in ((m, preset.methods[m].label) for m in preset.methods):
            want = f"{ref[method][0]:.1f} ± {ref[method][1]:.1f}" if ref.get(method) else "not reported"
            assert shown.loc[label, "reference: MCR Table 1"] == want


NUMBER_IN_PROSE = re.compile(r"\d\s*±|±\s*\d|\d\s*%|(?<![§\d])\b\d+\.\d+\b")


def prose(cell_source: str) -> str:
    """Markdown without code, maths (constants of a definition), links, admonition fences, section refs and
    arXiv ids."""
    text = re.sub(r"```.*?```|\$\$.*?\$\$|\$[^$]*\$", " ", cell_source, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"arXiv \d+\.\d+|§\d+(\.\d+)*", " ", text)


def test_every_chapter_is_checked():
    assert len(CHAPTERS) >= 15, [p.name for p in CHAPTERS]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_prose_has_no_typed_numbers(path):
    bad = [(path.name, i, m.group(0)) for i, cell in enumerate(nbformat.read(path, as_version=4).cells)
           if cell.cell_type == "markdown" for m in NUMBER_IN_PROSE.finditer(prose(cell.source))]
    assert not bad, f"numbers typed into chapter prose (print them from result files instead): {bad}"


def test_the_checker_catches_typed_numbers():
    for typed in ("MLB reaches 84.1 on Digits-AV", "a gain of 3 %", "71.9 ± 2.2"):
        assert NUMBER_IN_PROSE.search(prose(typed)), typed
    for fine in ("folds 0, 1, 2 with seeds 109, 19, 337", "see §4.1", "(arXiv 2411.07335)", "`lr 0.01`",
                 r"$k = 1 + \tanh(0.5 (r - 1))$"):
        assert not NUMBER_IN_PROSE.search(prose(fine)), fine
