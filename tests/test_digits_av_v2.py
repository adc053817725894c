"""Digits-AV v2: the chosen testbed meets each pre-registered criterion of
book/results/digits_av_v2_search/criteria.md, recomputed here from the committed per-run measurement files
(book/results/digits_av_v2_search/runs/<candidate>/<seed>_<task>.json), and the digits_av_v2 preset is that
setting."""
import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmbal.experiments import read_json
from mmbal.presets import get_preset
from mmbal.sweep import Cell, result_path, table_dir

FOLDER = Path(__file__).resolve().parent.parent / "book" / "results" / "digits_av_v2_search"
SEEDS, SCREEN_SEEDS = (109, 19, 337, 0, 1), (109, 19, 337)
CHOSEN = FOLDER / "chosen.json"
# Until the search has chosen a setting (chosen.json), the criteria tests fail and are reported as expected failures.
needs_choice = pytest.mark.xfail(not CHOSEN.exists(), reason="no Digits-AV v2 setting chosen yet", strict=True)


def chosen() -> dict:
    return json.loads(CHOSEN.read_text())


def values(task: str, key: str, candidate: str | None = None, seeds=SEEDS) -> np.ndarray:
    """(seeds,) one measurement (in %, or a cosine) of the chosen candidate, from the committed run files."""
    folder = FOLDER / "runs" / (candidate or chosen()["candidate"])
    runs = [json.loads((folder / f"{s}_{task}.json").read_text()) for s in seeds]
    assert [r["seed"] for r in runs] == list(seeds) and all(r["task"] == task for r in runs)
    return np.array([r[key] for r in runs], dtype=float)


def search_script():
    spec = importlib.util.spec_from_file_location("digits_av_search", FOLDER.parents[2] / "scripts" / "digits_av_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_run_names_a_clean_commit_of_this_repository():
    records = [json.loads(p.read_text()) for p in sorted((FOLDER / "runs").glob("*/*.json"))]
    assert records, "no committed search runs"
    commits = {r["commit"] for r in records}
    assert not [c for c in commits if c is None or c.endswith("+dirty")], commits
    root = FOLDER.parents[2]
    if (root / ".git").exists():                            # a git checkout: every commit is in its history
        missing = [c for c in commits if subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{c}^{{commit}}"],
                                                        capture_output=True).returncode != 0]
        assert not missing, missing


def test_the_candidate_log_is_the_summary_of_the_run_files(tmp_path):
    """candidates.csv holds every evaluated candidate, recomputed here from runs/ by the search script itself."""
    (tmp_path / "runs").symlink_to(FOLDER / "runs")
    fresh, logged = search_script().summarise(tmp_path), pd.read_csv(FOLDER / "candidates.csv")
    assert list(fresh.candidate) == list(logged.candidate) and list(fresh.stage) == list(logged.stage)
    numeric = fresh.select_dtypes("number").columns
    np.testing.assert_allclose(logged[numeric].to_numpy(float), fresh[numeric].to_numpy(float), atol=1e-9)
    flags = [c for c in fresh.columns if c.startswith("pass_")]
    assert (logged[flags].to_numpy() == fresh[flags].to_numpy()).all()


def test_summarising_after_training_leaves_the_candidate_log_alone(tmp_path):
    """A training invocation only prints its summary: rewriting the tracked candidates.csv there would turn every
    later run of the same checkout into a "+dirty" record."""
    (tmp_path / "runs").symlink_to(FOLDER / "runs")
    printed = search_script().summarise(tmp_path, write=False)
    assert not (tmp_path / "candidates.csv").exists()
    assert list(printed.candidate) == list(pd.read_csv(FOLDER / "candidates.csv").candidate)


def test_no_balancer_was_run_in_the_search():
    """Only the data, the baselines and MMCosine's collapse statistic (never its accuracy) are measured."""
    tasks = search_script().ALL_TASKS + search_script().DIAGNOSTIC_TASKS
    for path in (FOLDER / "runs").glob("*/*.json"):
        record = json.loads(path.read_text())
        assert record["task"] in tasks, path
        if record["task"] == "mmcosine":
            assert "fused" not in record, path


def test_todays_testbed_shows_no_suppression():
    """The search's premise, from the committed screening runs of c00 (the digits_av setting): joint training's video
    encoder probes within 5 points of the video encoder trained alone, and audio dominates."""
    alone, joint = (values(t, "probe_video", "c00", SCREEN_SEEDS) for t in ("uni", "joint"))
    assert abs(alone.mean() - joint.mean()) < 5
    assert values("uni", "audio", "c00", SCREEN_SEEDS).mean() - values("uni", "video", "c00", SCREEN_SEEDS).mean() >= 5


@needs_choice
def test_audio_dominates():
    assert values("uni", "audio").mean() - values("uni", "video").mean() >= 5


@needs_choice
def test_ensemble_beats_the_best_unimodal_model():
    best = max(values("uni", "audio").mean(), values("uni", "video").mean())
    assert values("uni", "fused").mean() - best >= 5


@needs_choice
def test_joint_training_suppresses_the_video_encoder():
    alone, joint = values("uni", "probe_video"), values("joint", "probe_video")
    gap = alone.mean() - joint.mean()
    assert gap >= 5 and gap >= 2 * max(alone.std(ddof=1), joint.std(ddof=1))


@needs_choice
@pytest.mark.parametrize("task", ["joint", "multi_loss"])
def test_doubling_the_epochs_moves_the_fused_accuracy_less_than_its_seed_std(task):
    base, doubled = values(task, "fused"), values(f"{task}_2x", "fused")
    assert abs(doubled.mean() - base.mean()) < base.std(ddof=1)


@needs_choice
@pytest.mark.parametrize("modality", ["audio", "video"])
def test_mmcosine_features_do_not_collapse(modality):
    assert values("mmcosine", f"cos_{modality}").max() < 0.99


@needs_choice
def test_the_choice_is_the_first_candidate_meeting_every_criterion():
    assert chosen() == search_script().choose(pd.read_csv(FOLDER / "candidates.csv"))


@needs_choice
def test_the_preset_is_the_chosen_setting():
    preset, changes = get_preset("digits_av_v2"), chosen()["changes"]
    optim = ("epochs", "lr", "weight_decay")
    setting = {**preset.data_options, **preset.encoder_options, **{k: getattr(preset.optim, k) for k in optim}}
    base = get_preset("digits_av")
    expected = {**base.data_options, **base.encoder_options, **{k: getattr(base.optim, k) for k in optim}, **changes}
    assert {k: setting.get(k) for k in expected} == expected


def test_each_selection_curve_picks_the_first_epoch_of_best_validation_accuracy():
    """The `curve` diagnostics: the recorded epoch is the first to reach the highest validation accuracy, its test
    accuracy is the run's, and it splits into the pairs with speech and with noise audio."""
    curves = [json.loads(p.read_text()) for p in sorted((FOLDER / "runs").glob("*/*_curve.json"))]
    assert curves, "no committed selection curves"
    for c in curves:
        val = np.array(c["val_curve"])
        assert len(val) == len(c["test_curve"]) == c["epochs"]
        assert c["best_epoch"] == int(np.flatnonzero(val == val.max())[0])
        assert c["fused"] == c["test_curve"][c["best_epoch"]]
        assert min(c["fused_speech"], c["fused_noise"]) <= c["fused"] <= max(c["fused_speech"], c["fused_noise"])


def committed_run(table: str, method: str, seed: int, fusion: str = "concat") -> dict:
    """The committed run record of one cell of a table under book/results."""
    return read_json(result_path(FOLDER.parent, Cell(table, method, fusion, seed)))


# search task -> {measurement: (table row, where in its run JSON)}; the search stores percent, rounded to 2 decimals
SAME_RUNS = {
    "joint": {"fused": ("joint", "test"), "probe_audio": ("joint", "probe audio"), "probe_video": ("joint", "probe video")},
    "multi_loss": {"fused": ("multi_loss", "test")},
    "uni": {"fused": ("ensemble", "test"), "audio": ("unimodal_audio", "test"), "video": ("unimodal_video", "test"),
            "probe_audio": ("unimodal_audio", "probe audio"), "probe_video": ("unimodal_video", "probe video")},
}


def table_measurement(row: str, where: str, seed: int) -> float:
    record = committed_run("digits_av_v2", row, seed)
    if where == "test":
        return 100 * record["test"]["mm"]["accuracy"]
    return 100 * record["linear_probe"][where.split()[1]]["test_accuracy"]


@needs_choice
@pytest.mark.parametrize("seed", SEEDS)
def test_the_table_reproduces_the_chosen_candidates_search_runs(seed):
    """The digits_av_v2 table re-ran the chosen setting's baseline cells from another commit: every measurement the
    criteria were computed from comes back to the search's two decimals."""
    for task, measured in SAME_RUNS.items():
        search = json.loads((FOLDER / "runs" / chosen()["candidate"] / f"{seed}_{task}.json").read_text())
        for key, (row, where) in measured.items():
            assert round(table_measurement(row, where, seed), 2) == search[key], (seed, task, key)


# chapter 10's SGD rows that are configured exactly like a row of the main v2 table
OPTIM_SAME_AS_MAIN = {"joint_sgd": "joint", "multi_loss_sgd": "multi_loss", "mlb_sgd": "mlb", "ogm_ge_sgd": "ogm_ge"}


@pytest.mark.parametrize("optim_row", sorted(OPTIM_SAME_AS_MAIN))
def test_the_optimiser_table_reproduces_the_main_tables_runs(optim_row):
    """digits_av_optim_v2 ran from another commit (and resumed one run from a checkpoint): its SGD rows that share
    the main table's configuration give the same test results and the same selected epoch on every seed."""
    for seed in get_preset("digits_av_optim_v2").seeds:
        ours = committed_run("digits_av_optim_v2", optim_row, seed)
        main = committed_run("digits_av_v2", OPTIM_SAME_AS_MAIN[optim_row], seed)
        assert ours["environment"]["commit"] != main["environment"]["commit"]
        assert ours["test"] == main["test"], (optim_row, seed)
        assert ours["linear_probe"] == main["linear_probe"], (optim_row, seed)
        assert ours["best_epoch"] == main["best_epoch"], (optim_row, seed)


def test_the_rerun_check_covers_a_balancer_a_regime_and_a_non_concat_fusion_and_matches_the_table():
    """rerun_check.json (written by `table compare --out`): six or more re-run cells, all identical, and its
    reference accuracies are the committed runs' own (the file is not stale)."""
    check = read_json(table_dir(FOLDER.parent, "digits_av_v2") / "rerun_check.json")
    rows = check["rows"]
    assert check["cells"] == len(rows) >= 6 and check["identical"] == len(rows)
    assert all(r["identical"] and r["test_accuracy_rerun"] == r["test_accuracy_reference"] for r in rows)
    preset = get_preset("digits_av_v2")
    kinds = {("regime" if preset.run_config(r["method"]).regime else
              "balancer" if preset.run_config(r["method"]).balancer.name != "none" else "plain") for r in rows}
    assert {"regime", "balancer"} <= kinds and any(r["fusion"] != "concat" for r in rows)
    for r in rows:
        record = committed_run("digits_av_v2", r["method"], r["seed"], r["fusion"])
        assert record["test"]["mm"]["accuracy"] == r["test_accuracy_reference"], r
