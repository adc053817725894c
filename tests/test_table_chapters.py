"""The paper-table chapters 8a-8d: rendered from one template (scripts/table_chapters.py), each teaching its own
dataset, and runnable in full mode: chapter 8c trains on a fabricated AVE cache and writes its summary."""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from booktools import k_verdict, mlb_k, mlb_k_table, modality_strength
from mmbal.sweep import sweep

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("table_chapters", ROOT / "scripts" / "table_chapters.py")
table_chapters = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table_chapters)
STEMS = {"08a_cremad_resnet": ("cremad_resnet18", "cao2014cremad"),
         "08b_cremad_conformer": ("cremad_conformer", "cao2014cremad"),
         "08c_ave": ("ave_resnet18", "tian2018ave"), "08d_ucf101": ("ucf101_resnet18", "soomro2012ucf101")}


def cells(stem: str) -> list[dict]:
    return json.loads((ROOT / "book" / f"{stem}.ipynb").read_text(encoding="utf-8"))["cells"]


def test_committed_chapters_equal_the_template():
    rendered = table_chapters.chapters()
    assert sorted(rendered) == sorted(STEMS)
    stale = [s for s, text in rendered.items() if (ROOT / "book" / f"{s}.ipynb").read_text(encoding="utf-8") != text]
    assert not stale, f"edit scripts/table_chapters.yaml and run python scripts/table_chapters.py --write: {stale}"


@pytest.mark.parametrize("stem", sorted(STEMS))
def test_each_chapter_teaches_its_own_table(stem):
    table, cite = STEMS[stem]
    nb = cells(stem)
    text = "".join("".join(c["source"]) for c in nb)
    assert "## Learning goals" in "".join(nb[2]["source"])
    assert f'TABLE = "{table}"' in "".join(nb[3]["source"]) and "parameters" in nb[3]["metadata"]["tags"]
    assert f"{{cite:p}}`{cite}`" in text and "{cite:p}`kontras2025mcr`" in text
    assert text.count(":::{admonition} Solution\n:class: dropdown") == text.count("\n:::{admonition}") >= 3
    assert all(not c.get("outputs") for c in nb if c["cell_type"] == "code")
    others = [t for s, (t, _) in STEMS.items() if s != stem]
    assert not any(f'TABLE = "{t}"' in text for t in others)


def test_the_chapters_differ_in_their_dataset_sections():
    dataset = {s: "".join(next(c for c in cells(s) if "".join(c["source"]).startswith("## The dataset"))["source"])
               for s in STEMS}
    assert len(set(dataset.values())) == 4
    assert "wav2vec2" in "".join("".join(c["source"]) for c in cells("08b_cremad_conformer"))


def test_the_leading_modality_comes_from_the_reference_rows():
    assert modality_strength("ucf101_resnet18").attrs["leader"] == "video"
    ave = modality_strength("ave_resnet18")
    assert ave.attrs["leader"] == "audio" and ave.attrs["gap"] == pytest.approx(62.6 - 45.7)


def test_k_is_evaluated_not_typed():
    assert mlb_k([2.0], 2.0, 0.5)[0] == pytest.approx(1 - 0.5 * math.tanh(2.0), abs=1e-6)   # UCF101: inverted
    assert mlb_k([3.0, 0.5], 2.0, 1.0).tolist() == pytest.approx([1.0, 1 + math.tanh(-1.0)], abs=1e-6)
    assert mlb_k([2.0], 0.5, None)[0] == pytest.approx(1 + math.tanh(0.5), abs=1e-6)         # the paper's form
    assert k_verdict(2.0, 1.0).startswith("never accelerates") and k_verdict(2.0, 0.5).startswith("slows")
    assert k_verdict(0.5, 10.0) == "accelerates the weaker modality (k up to 10.00)"
    ave = mlb_k_table("ave_resnet18")
    assert list(ave.index) == ["concat (this table)", "mlp (this table)", "uncapped, same alpha (BMVC-era form)"]
    assert ave.loc["concat (this table)", "k at r=4"] == 1.0 and ave.loc["mlp (this table)", "k at r=4"] > 1.9


def test_sweep_without_a_results_folder_says_so():
    with pytest.raises(ValueError, match="results folder"):
        sweep("ave_resnet18", None)


@pytest.fixture(scope="module")
def ave_cache(tmp_path_factory):
    from data_scripts import ave, fabricate
    root = tmp_path_factory.mktemp("ave_chapter")
    fabricate.fabricate_ave(root / "raw")            # 9 four-second videos, 3 classes: 5 / 2 / 2 after the overlap
    assert ave.main(ave.SPEC, ["all", "--raw", str(root / "raw"), "--cache", str(root / "cache"),
                               "--frame-size", "24x32", "--workers", "0", "--no-progress"]) == 0
    return root / "cache"


def test_full_mode_runs_chapter_8c_on_a_fabricated_cache(ave_cache, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    results = tmp_path / "results"
    monkeypatch.setenv("MMBAL_FAST", "0")
    monkeypatch.setenv("MMBAL_DATA_ROOT", str(ave_cache))
    monkeypatch.setenv("MMBAL_RESULTS", str(results))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / "08c_full.ipynb"
    papermill.execute_notebook(str(ROOT / "book" / "08c_ave.ipynb"), str(out), cwd=str(ROOT / "book"),
                               parameters={"METHODS": ["joint", "mlb"], "FUSIONS": ["concat"], "SEEDS": [109],
                                           "EPOCHS": 1, "TRY_EPOCHS": 1}, progress_bar=False, kernel_name="python3")
    summary = pd.read_csv(results / "ave_resnet18" / "summary.csv")
    assert sorted(zip(summary["method"], summary["fusion"])) == [("joint", "concat"), ("mlb", "concat")]
    acc = summary["test_accuracy_mean"].to_numpy()
    assert np.all((acc >= 0) & (acc <= 1)) and list(summary["n"]) == [1, 1]
    for method in ("joint", "mlb"):
        record = json.loads((results / "ave_resnet18" / "runs" / f"{method}__concat__seed109.json").read_text())
        assert len(record["history"]) == 1 and record["data"]["sizes"] == {"train": 5, "val": 2, "test": 2}
        assert record["config"]["data"]["name"] == "ave" and not record["cell"]["fast"]
    text = out.read_text(encoding="utf-8")
    assert "this book: 2 (method, fusion) cells with results" in text and "2 runs done, 0 already finished" in text
