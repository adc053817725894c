"""The reference protocol of the paper presets: the MLB code's warm-up + warm-restart schedule, its fold
file, seeds <-> folds, selection and early stopping, and the hyperparameter table that names every source."""
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_scripts import cremad, fabricate
from mmbal.balancers.mlb import coefficients_from_ratios
from mmbal.cli import main
from mmbal.config import OptimConfig
from mmbal.data import DATASETS
from mmbal.data.cached import CacheError, open_cache
from mmbal.experiments import config_hash
from mmbal.models import ENCODERS
from mmbal.presets import get_preset
from mmbal.train import scheduled_lr

ROOT = Path(__file__).resolve().parent.parent


def _mlb_code_lrs(base_lr: float, warmup: int, steps: int, t0: int = 4, t_mult: int = 2) -> list[float]:
    """The lr of each optimizer step under the MLB code's schedule: its WarmupScheduler holds the base lr
    for ``warmup`` steps, then steps CosineAnnealingWarmRestarts with the global step index after each
    optimizer step (``scheduler.step(step=current_step + 1)``)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base_lr)
    after = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=t_mult)
    lrs, n_steps = [], 0
    for step in range(steps):
        lrs.append(opt.param_groups[0]["lr"])               # the lr this optimizer step uses
        opt.step()
        n_steps += 1                                        # WarmupScheduler._update_learning_rate
        if n_steps < warmup:
            opt.param_groups[0]["lr"] = base_lr
        else:
            after.step(step + 1)
    return lrs


@pytest.mark.parametrize("warmup, t0, t_mult", [(780, 4, 2), (0, 4, 2), (10, 3, 1), (1500, 4, 2)])
def test_cosine_restarts_is_the_mlb_code_schedule(warmup, t0, t_mult):
    cfg = OptimConfig(name="adam", lr=1e-3, schedule="cosine_restarts", warmup_steps=warmup,
                      restart_period=t0, restart_mult=t_mult)
    steps = 3000
    ours = [scheduled_lr(cfg, step, total_steps=steps) for step in range(steps)]
    reference = _mlb_code_lrs(1e-3, warmup, steps, t0, t_mult)
    assert max(abs(a - b) for a, b in zip(ours, reference)) < 1e-12
    if warmup:
        assert ours[:warmup] == [1e-3] * warmup                               # held, not ramped
    if (warmup, t0, t_mult) == (780, 4, 2):             # windows 508-1019 and 1020-2043: restart at 1020
        assert ours[779] == 1e-3 and ours[1019] < 1e-7 and ours[1020] == 1e-3 and math.isclose(ours[1532], 5e-4)


def test_cosine_restarts_options_are_checked():
    with pytest.raises(ValueError, match="restart_period must be an integer >= 1"):
        OptimConfig(schedule="cosine_restarts", restart_period=0)
    with pytest.raises(ValueError, match="valid: cosine, constant, cosine_restarts"):
        OptimConfig(schedule="restarts")


def _vavl(names: list[str]) -> dict:
    """A fold file in the MLB code's format (JSON keyed "1".."5", clips as "<name>.wav-<k>"), folds rotated."""
    out = {}
    for key in range(1, 6):
        names = names[6:] + names[:6]
        out[str(key)] = {"train": [f"{n}.wav-0" for n in names[:24]], "val": [f"{n}.wav-1" for n in names[24:30]],
                         "test": [f"{n}.wav-2" for n in names[30:]]}
    return out


@pytest.fixture(scope="module")
def cremad_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("cremad") / "raw"
    fabricate.fabricate_cremad(root)                     # 6 actors x 6 emotions
    return root


def test_folds_mlb_fetches_the_fold_file_at_prepare_time_and_the_presets_read_it(cremad_raw, tmp_path, monkeypatch,
                                                                                  capsys):
    opts = ["--frame-size", "24x32", "--workers", "0", "--no-progress"]
    prepare = lambda cache, *more: cremad.main(cremad.SPEC, ["prepare", "--raw", str(cremad_raw), "--cache",
                                                             str(cache), *opts, *more])
    names = sorted(p.stem for p in (cremad_raw / "AudioWAV").glob("*.wav"))
    served = tmp_path / "served" / "data_splits_VALV.pkl"         # JSON despite the name, like the real file
    served.parent.mkdir()
    served.write_text(json.dumps(_vavl(names)))
    monkeypatch.setattr(cremad, "MLB_FOLDS_URL", served.as_uri())
    monkeypatch.setattr(cremad, "MLB_FOLDS_SHA256", "0" * 64)
    cache = tmp_path / "cache"
    assert prepare(cache, "--folds", "mlb") == 1                   # a file that is not the pinned one is refused
    assert "not the pinned" in capsys.readouterr().err and not (cache / "mlb_data_splits_VALV.json").exists()
    monkeypatch.setattr(cremad, "MLB_FOLDS_SHA256", hashlib.sha256(served.read_bytes()).hexdigest())
    assert prepare(cache, "--folds", "mlb") == 0 and (cache / "mlb_data_splits_VALV.json").exists()
    cfg = get_preset("cremad_resnet18").run_config("mlb", seed=19)
    assert cfg.data.options == {"fold_set": "mlb", "fold": 1}      # seed 19 <-> fold 1 <-> the file's key "2"
    splits = DATASETS.create("cremad", seed=19, root=str(cache), image_size=16, **cfg.data.options)
    expected = sorted(n.split(".wav")[0] for n in _vavl(names)["2"]["test"])
    index = open_cache(cache, dataset="cremad").index
    assert sorted(index[int(r)]["clip"] for r in splits.test.rows) == expected
    with pytest.raises(CacheError, match="holds the mlb folds, not the regenerated ones.*--folds committed"):
        DATASETS.create("cremad", seed=19, root=str(cache), image_size=16, fold_set="regenerated")
    # offline: one clear line, what to do instead
    monkeypatch.setattr(cremad, "MLB_FOLDS_URL", (tmp_path / "nowhere.pkl").as_uri())
    assert prepare(tmp_path / "cache2", "--folds", "mlb") == 1
    err = capsys.readouterr().err
    assert "fetching it failed" in err and "--mlb-folds-file FILE" in err and "--folds committed" in err


def test_table_show_names_every_protocol_value_with_its_source(capsys):
    hp = get_preset("cremad_resnet18").hyperparameters().set_index(["method", "fusion", "parameter"])

    def cell(*key):
        return tuple(hp.loc[key, ["value", "source"]])

    schedule = "the MLB code's IJCV-era default configs (cosanneal, warm_up_steps 780) and Loader.get_scheduler"
    for parameter, value in [("optim.schedule", "cosine_restarts"), ("optim.warmup_steps", "780"),
                             ("optim.restart_period", "4"), ("optim.restart_mult", "2")]:
        assert cell("all", "all", parameter)[0] == value and cell("all", "all", parameter)[1].startswith(schedule)
    assert cell("all", "all", "select_head")[0] == "mm" and "fused prediction" in cell("all", "all", "select_head")[1]
    assert cell("all", "all", "seeds")[0] == "109, 19, 337" and cell("all", "all", "fold")[0] == "0, 1, 2"
    assert cell("all", "all", "data_options.fold_set") == (
        "mlb", "the MLB code's fold file datasets/CREMAD/data_splits_VALV (VAVL folds, both eras)")
    assert cell("all", "all", "optim.early_stop") == ("100", "the MLB code's IJCV-era configs")
    assert cell("mlb", "all", "alpha") == ("0.5", "the MLB code's run.sh (IJCV-era)")
    assert cell("pmr", "all", "alpha") == ("1.75", "the MLB code's BMVC-era configs")
    assert ("all", "all", "optim.restart_period") not in get_preset("digits_av").hyperparameters().set_index(
        ["method", "fusion", "parameter"]).index                      # shown only for the warm-restart schedule
    conformer = get_preset("cremad_conformer")
    assert [conformer.run_config(m).optim.warmup_steps for m in ("joint", "mlb")] == [1500, 780]
    assert main(["table", "show", "cremad_resnet18"]) == 0
    out = capsys.readouterr().out
    assert "cosine_restarts" in out and "data_splits_VALV" in out and "BMVC-era" in out and "IJCV-era" in out


def test_ave_and_ucf_betas_disable_or_invert_acceleration_and_say_so():
    r = {"audio": torch.tensor(0.5), "video": torch.tensor(2.0)}            # video is the weaker modality
    ave, ucf = (coefficients_from_ratios(r, alpha=2.0, beta_max=get_preset(name).method("mlb").options["beta_max"])
                for name in ("ave_resnet18", "ucf101_resnet18"))
    assert ave["video"].item() == 1.0 and ave["audio"].item() < 1.0        # beta 1: no acceleration
    assert 0.5 < ucf["video"].item() < 1.0 and ucf["audio"].item() < ucf["video"].item()   # beta 0.5: both slowed
    assert any("disables acceleration" in n for n in get_preset("ave_resnet18").notes)
    assert any("inverts acceleration" in n for n in get_preset("ucf101_resnet18").notes)


def test_mmcosine_collapses_on_groupnorm_not_on_batchnorm_encoders():
    """bench/mmcosine_collapse.py, one epoch: under MMCosine the GroupNorm small CNN's video features point one
    way within ten steps and channels die; with BatchNorm they spread apart (chapter 7)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "mmcosine_collapse.py"), "--variants",
                           "gn_mmcosine,bn_mmcosine", "--epochs", "1"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows, variant = {}, None
    for line in proc.stdout.splitlines():
        if line.endswith("optim recipe"):
            variant = line.split(":")[0]
        elif line.strip().startswith(("step 11", "epoch 1")):
            rows[variant, line.split()[0] + line.split()[1]] = [float(x) for x in line.split()[2:]]
    cos_v, dead_v, spread_v = 1, 2, 3                                   # columns after cos_a
    assert rows["gn_mmcosine", "step11"][cos_v] > 0.9999 and rows["gn_mmcosine", "epoch1"][dead_v] > 0.2
    assert rows["bn_mmcosine", "epoch1"][cos_v] < 0.97 and rows["bn_mmcosine", "epoch1"][dead_v] == 0
    assert rows["bn_mmcosine", "epoch1"][spread_v] > 10 * rows["gn_mmcosine", "epoch1"][spread_v]


def test_the_batchnorm_setting_leaves_the_committed_digits_av_cells_alone():
    record = json.loads((ROOT / "book/results/digits_av/runs/mmcosine__concat__seed109.json").read_text())
    committed = get_preset("digits_av").run_config("mmcosine", seed=109)
    assert committed.model.encoder_options == {} and config_hash(record["config"]) == config_hash(committed)
    fixed = get_preset("digits_av_mmcosine").run_config("mmcosine_batchnorm", seed=109)
    assert fixed.model.encoder_options == {"norm": "batch"} and fixed.balancer == committed.balancer
    assert fixed.optim == committed.optim and fixed.data == committed.data
    assert get_preset("digits_av_mmcosine").run_config("mmcosine", seed=109).model == committed.model
    net = ENCODERS.create("small_cnn", modality="video", input_shape=(1, 3, 16, 16), norm="batch")
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 3
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ENCODERS.create(
        "small_cnn", modality="video", input_shape=(1, 3, 16, 16)).modules())
    with pytest.raises(ValueError, match="norm must be 'group' or 'batch'"):
        ENCODERS.create("small_cnn", modality="video", input_shape=(1, 3, 16, 16), norm="layer")
    hp = get_preset("digits_av_mmcosine").hyperparameters().set_index(["method", "fusion", "parameter"])
    value, source = hp.loc[("mmcosine_batchnorm", "all", "encoder_options.norm"), ["value", "source"]]
    assert value == "batch" and "GeWu-Lab/MMCosine_ICASSP23" in source
