"""Presets resolve to the paper's hyperparameters (the MLB code's run.sh and configs), read from presets.yaml."""
import copy

import pytest

import mmbal.presets as presets
from mmbal.balancers import BALANCERS
from mmbal.config import OptimConfig, RunConfig
from mmbal.presets import (DEFAULT_SOURCE, FAST_EPOCHS, PAPER_SEEDS, PRESETS, REFERENCE_SOURCE, get_preset,
                           reference_numbers)
from mmbal.regimes import REGIMES


def test_cremad_resnet_mlb_is_the_run_sh_recipe():
    cfg = get_preset("cremad_resnet18").run_config("mlb", seed=109)
    assert (cfg.balancer.name, cfg.objective.name) == ("mlb", "multi_loss")
    assert cfg.balancer.options["alpha"] == 0.5 and cfg.balancer.options["beta_max"] == 10.0
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adam", 1e-3, 1e-4)
    assert cfg.data.batch_size == 32 and cfg.optim.early_stop == 300 and cfg.optim.epochs == 1500
    assert (cfg.data.name, cfg.model.encoder, cfg.model.fusion) == ("cremad", "resnet18", "concat")
    assert cfg.data.options == {"fold_set": "mlb", "fold": 0}
    # beta per fusion (run.sh): Mid-MLP 5, FiLM 20; other methods keep the CREMA-D early stop 100
    assert get_preset("cremad_resnet18").run_config("mlb", "mlp").balancer.options["beta_max"] == 5.0
    assert get_preset("cremad_resnet18").run_config("mlb", "film").balancer.options["beta_max"] == 20.0
    assert get_preset("cremad_resnet18").run_config("joint").optim.early_stop == 100


def test_ave_ogm_agm_and_ucf_agm_mlb():
    ave = get_preset("ave_resnet18")
    assert ave.run_config("ogm").balancer.options["alpha"] == 0.6
    agm = ave.run_config("agm")
    assert agm.balancer.options["alpha"] == 3.0 and agm.optim.lr == 1e-4
    assert ave.run_config("mlb").balancer.options == {**ave.run_config("mlb").balancer.options,
                                                      "alpha": 2.0, "beta_max": 1.0}
    assert ave.folds is None and ave.run_config("joint", seed=19).data.options == {}
    ucf = get_preset("ucf101_resnet18")
    assert ucf.run_config("agm").balancer.options["alpha"] == 2.0
    assert ucf.run_config("mlb").balancer.options["beta_max"] == 0.5
    assert ucf.run_config("uni_pre_finetuned").optim.lr == 1e-4
    assert [ucf.run_config("joint", seed=s).data.options["split"] for s in PAPER_SEEDS] == [1, 2, 3]


def test_conformer_and_digits_presets():
    conf = get_preset("cremad_conformer").run_config("mlb", seed=337)
    assert (conf.optim.lr, conf.optim.weight_decay, conf.data.batch_size) == (5e-5, 5e-6, 8)
    assert conf.balancer.options["alpha"] == 5.0 and conf.balancer.options["beta_max"] is None
    assert conf.data.options == {"fold_set": "mlb", "inputs": "features", "fold": 2}
    assert conf.optim.betas == (0.9, 0.999)
    assert get_preset("cremad_conformer").run_config("joint").optim.betas == (0.95, 0.999)
    assert conf.model.encoder == "sequence_conformer"                     # the paper's inputs: wav2vec 2.0 / faces
    light = get_preset("cremad_conformer_spectrogram").run_config("mlb", seed=337)
    assert light.model.encoder == "conformer" and light.data.options["inputs"] == "media"
    assert (light.optim, light.balancer) == (conf.optim, conf.balancer)  # same hyperparameters, other inputs
    digits = get_preset("digits_av").run_config("mlb")
    assert digits.optim == OptimConfig()          # SGD 0.9, lr 0.01, wd 1e-4, cosine, 20 epochs
    assert digits.data.batch_size == 32 and digits.seed == 109


def test_every_preset_loads_and_every_cell_builds_a_valid_config():
    assert list(PRESETS) == ["cremad_resnet18", "cremad_conformer", "cremad_conformer_spectrogram", "ave_resnet18",
                             "ucf101_resnet18", "digits_av", "digits_av_optim", "digits_av_mmcosine", "digits_av_v2",
                             "digits_av_optim_v2"]
    for preset in PRESETS.values():
        for method, fusion in preset.cells():
            for seed in preset.seeds:
                cfg = preset.run_config(method, fusion, seed)
                assert RunConfig.from_dict(cfg.to_dict()) == cfg and cfg.model.fusion == fusion
            BALANCERS.create(cfg.balancer.name, **cfg.balancer.options)   # option names are real
            if cfg.regime is not None:
                assert cfg.regime in REGIMES
            assert cfg.balancer.name in BALANCERS


def test_hyperparameter_table_names_a_source_for_every_value():
    for preset in PRESETS.values():
        hp = preset.hyperparameters()
        assert list(hp.columns) == ["method", "fusion", "parameter", "value", "source"] and len(hp) > 10
        assert hp["source"].map(lambda s: isinstance(s, str) and len(s) > 10).all(), preset.name
        assert hp["value"].map(lambda v: isinstance(v, str) and "{" not in v).all(), preset.name
        assert set(hp["method"]) == {"all", *preset.methods} and set(hp["fusion"]) <= {"all", *preset.fusions}
    hp = get_preset("cremad_resnet18").hyperparameters().set_index(["method", "fusion", "parameter"])

    def cell(*key):
        return tuple(hp.loc[key, ["value", "source"]])

    assert cell("mlb", "all", "alpha") == ("0.5", "the MLB code's run.sh (IJCV-era)")
    assert cell("mlb", "film", "beta_max") == ("20.0", "the MLB code's run.sh (IJCV-era)")
    assert cell("mlb", "all", "optim.early_stop") == ("300", "the MLB code's IJCV-era configs")
    assert cell("pmr", "all", "alpha") == ("1.75", "the MLB code's BMVC-era configs")
    assert cell("pmr", "all", "refresh_fraction") == ("0.1", DEFAULT_SOURCE)
    assert cell("mslr", "all", "init_scale")[0] == "audio 0.7, video 1.3"
    assert cell("all", "all", "fold")[0] == "0, 1, 2" and "main.py" in cell("all", "all", "fold")[1]
    assert cell("all", "all", "optim.schedule")[0] == "cosine_restarts"      # more in tests/test_protocols.py
    assert cell("unimodal_audio", "all", "method")[0] == "regime unimodal (modality audio)"
    assert ("all", "all", "optim.momentum") not in hp.index                      # Adam: no momentum row
    optim = get_preset("digits_av_optim").hyperparameters().set_index(["method", "fusion", "parameter"])
    assert tuple(optim.loc[("fixed_adam", "all", "coefficients"), ["value", "source"]]) == (
        "audio 0.81, video 1.33", "MLB's time-averaged k in the committed digits_av runs")


def _load(change, name="ave_resnet18"):
    """Load one preset of presets.yaml after ``change`` edits a copy of its data."""
    raw = copy.deepcopy(presets._DATA["presets"][name])
    change(raw)
    return presets._preset(name, raw)


@pytest.mark.parametrize("change, message", [
    (lambda r: r["methods"].update(agm={"options": {"alpah": 1.0}}), "'ave_resnet18'.*agm.*alpah"),
    (lambda r: r["methods"].update(agm={"optim": {"lr": "1e-4"}}), "'ave_resnet18': method 'agm'.*lr.*1.0e-3"),
    (lambda r: r["methods"].update(agm={"labell": "AGM"}), "method 'agm'.*labell"),
    (lambda r: r["methods"].update(mlb2=None), "method 'mlb2' is not a row"),
    (lambda r: r["fusion_options"]["mlp"].update(ogm={"alpha": 1.0}), "runs 'ogm' with fusions concat"),
    (lambda r: r["sources"].update({"methods.pmrr": "x"}), r"sources \['methods.pmrr'\] name no value"),
    (lambda r: r.update(batchsize=3), "'ave_resnet18'.*batchsize"),
    (lambda r: r.pop("methods"), "missing key 'methods'"),
])
def test_a_broken_preset_fails_naming_the_preset_and_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        _load(change)
    assert _load(lambda r: None) == get_preset("ave_resnet18")


def test_notes_cite_the_code_not_private_files():
    for preset in PRESETS.values():
        assert preset.notes and not any("reference/" in note or ".md" in note for note in preset.notes)


def test_fast_and_bad_names():
    p = get_preset("digits_av")
    cfg = p.run_config("joint", fast=True)
    assert cfg.fast and cfg.optim.epochs == FAST_EPOCHS and cfg.optim.early_stop is None
    assert p.run_config("unimodal_video").regime_options == {"modality": "video"}
    with pytest.raises(ValueError, match="valid presets: cremad_resnet18"):
        get_preset("cremad")
    with pytest.raises(ValueError, match="valid: unimodal_audio"):
        p.run_config("mlb_typo")
    with pytest.raises(ValueError, match="fusions concat"):
        p.run_config("ogm", "film")                 # OGM is not in the fusion ablation


def test_reference_numbers_are_mcr_table1():
    assert reference_numbers("cremad_resnet18")["mlb"] == (71.9, 2.2)
    assert reference_numbers("ave_resnet18")["ogm"] == (67.3, 0.6)
    assert reference_numbers("ucf101_resnet18")["unimodal_audio"] == (30.3, 1.5)
    assert reference_numbers("cremad_conformer")["pmr"] is None       # PMR is not in MCR Table 1
    with pytest.raises(ValueError, match="valid: cremad_resnet18"):
        reference_numbers("sthsth")
    assert "MCR paper Table 1" in REFERENCE_SOURCE and not REFERENCE_SOURCE.startswith("#")
