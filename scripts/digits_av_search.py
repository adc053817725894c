"""Digits-AV v2 design search: the pre-registered candidates of
book/results/digits_av_v2_search/criteria.md, measured on the data and the baselines only.

Each task trains one baseline of one candidate and seed and writes its measurements to
<out>/runs/<candidate>/<seed>_<task>.json (resumable: a finished task is skipped):

  uni         unimodal audio + video and their ensemble (the `ensemble` regime), linear probes of both encoders
  joint       joint training, fused accuracy and the linear probes of both encoders
  multi_loss  multi-loss, fused accuracy
  joint_2x, multi_loss_2x   the same at twice the epochs (convergence)
  mmcosine    MMCosine's mean pairwise cosine of different test samples' features (its accuracy is not kept), on
              BatchNorm encoders as the v2 table runs it (criteria.md, addendum 9)
  init        the linear probes of both encoders at initialisation (untrained): what a probe reads off random
              features, the floor under the suppression criterion (a diagnostic; not a criterion)
  curve       joint training's fused accuracy on validation and test after every epoch, the epoch picked on
              validation, and the test accuracy there on the pairs with speech and with noise audio (a diagnostic)

Screening (criteria 1-3) runs uni, joint and multi_loss on 3 seeds; a candidate passing them gets every task on
5 seeds. No balancer other than MMCosine's collapse statistic is ever run here.

    python scripts/digits_av_search.py --candidates c00,c01 --jobs 2
    python scripts/digits_av_search.py --summarise            # rewrite candidates.csv from the run files
    python scripts/digits_av_search.py --choose               # ... and chosen.json, the first candidate meeting all
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmbal.data import DATASETS
from mmbal.experiments import git_commit, run
from mmbal.presets import get_preset
from mmbal.probe import linear_probe, probe_encoders
from mmbal.train import Trained, build_trainer

OUT = Path("book/results/digits_av_v2_search")
SCREEN_SEEDS, ALL_SEEDS = (109, 19, 337), (109, 19, 337, 0, 1)
SCREEN_TASKS = ("uni", "joint", "multi_loss")
ALL_TASKS = SCREEN_TASKS + ("joint_2x", "multi_loss_2x", "mmcosine")
DIAGNOSTIC_TASKS = ("init", "curve")                 # run with --tasks; never part of a criterion
# id -> changes from the digits_av preset: data options, encoder options, optim fields (criteria.md, in order)
F15, N15 = {"audio_uninformative_frac": 0.15}, {"audio_uninformative_frac": 0.15, "image_noise": 1.5}
FIXED_SPLIT = {"audio_uninformative_frac": 0.0, "redraw": False, "test_repeats": 5, "split_seed": 0}
CANDIDATES = {
    "c00": ({}, {}, {}),
    "c01": (F15, {}, {}),
    "c02": (N15, {}, {}),
    "c03": ({"audio_uninformative_frac": 0.1, "image_noise": 1.5}, {}, {}),
    "c04": (F15, {"norm": "batch"}, {}),
    "c05": (N15, {"norm": "batch"}, {}),
    "c06": (F15, {}, {"epochs": 40}),
    "c07": (N15, {"norm": "batch"}, {"epochs": 40}),
    "c08": ({**N15, "audio_speed_jitter": 0.1}, {}, {}),
    "c09": ({"audio_uninformative_frac": 0.2, "image_noise": 2.0, "frames": 5}, {}, {}),
    "c10": (N15, {"width": 8}, {}),
    "c11": (N15, {}, {"lr": 0.003, "epochs": 40}),
    # criteria.md, addendum 1
    "c12": ({"audio_uninformative_frac": 0.05, "image_noise": 1.5}, {}, {}),
    "c13": ({"audio_uninformative_frac": 0.0, "image_noise": 1.5}, {}, {}),
    "c14": ({"audio_uninformative_frac": 0.1, "image_noise": 2.0, "frames": 1}, {}, {}),
    "c15": ({"audio_uninformative_frac": 0.1, "image_noise": 1.5}, {}, {"lr": 0.03}),
    "c16": ({"audio_uninformative_frac": 0.1, "image_noise": 1.5}, {"norm": "batch"}, {"epochs": 40}),
    # criteria.md, addendum 2
    "c17": ({"audio_uninformative_frac": 0.0}, {}, {}),
    "c18": ({"audio_uninformative_frac": 0.0}, {"norm": "batch"}, {}),
    "c19": ({"audio_uninformative_frac": 0.15, "redraw": False}, {}, {}),
    "c20": ({"audio_uninformative_frac": 0.0, "redraw": False}, {}, {}),
    "c21": ({"audio_uninformative_frac": 0.15, "redraw": False}, {"norm": "batch"}, {"epochs": 40}),
    # criteria.md, addendum 4
    "c22": ({"audio_uninformative_frac": 0.05, "redraw": False}, {}, {}),
    "c23": ({"audio_uninformative_frac": 0.0, "redraw": False}, {}, {"epochs": 40}),
    "c24": ({"audio_uninformative_frac": 0.05, "redraw": False}, {"norm": "batch"}, {}),
    "c25": ({"audio_uninformative_frac": 0.1, "redraw": False, "image_noise": 0.7}, {}, {}),
    # criteria.md, addendum 5
    "c26": ({"audio_uninformative_frac": 0.0, "redraw": False}, {}, {"epochs": 80}),
    "c27": ({"audio_uninformative_frac": 0.0, "redraw": False}, {"norm": "batch"}, {"epochs": 40}),
    # criteria.md, addendum 6
    "c28": ({"audio_uninformative_frac": 0.0, "redraw": False, "test_repeats": 5}, {}, {"epochs": 40}),
    "c29": ({"audio_uninformative_frac": 0.05, "redraw": False, "test_repeats": 5}, {}, {"epochs": 40}),
    "c30": ({"audio_uninformative_frac": 0.0, "redraw": False, "test_repeats": 5}, {}, {"lr": 0.03, "epochs": 40}),
    # criteria.md, addendum 7
    "c31": ({"audio_uninformative_frac": 0.1, "image_noise": 1.5, "test_repeats": 5}, {"norm": "batch"},
            {"epochs": 40}),
    "c32": ({"audio_uninformative_frac": 0.15, "image_noise": 1.5, "test_repeats": 5}, {"norm": "batch"},
            {"epochs": 40}),
    "c33": ({"audio_uninformative_frac": 0.1, "image_noise": 1.5, "redraw": False, "test_repeats": 5},
            {"norm": "batch"}, {"epochs": 40}),
    # criteria.md, addendum 8
    "c34": (FIXED_SPLIT, {}, {"epochs": 40}),
    "c35": (FIXED_SPLIT, {}, {"epochs": 40, "weight_decay": 0.0}),
    # criteria.md, addendum 10
    "c36": ({**FIXED_SPLIT, "audio_uninformative_frac": 0.05}, {}, {"epochs": 40, "weight_decay": 0.0}),
    "c37": ({**FIXED_SPLIT, "audio_uninformative_frac": 0.1}, {}, {"epochs": 40, "weight_decay": 0.0}),
    # criteria.md, addendum 11
    "c38": ({**FIXED_SPLIT, "heldout_audio_uninformative_frac": 0.1}, {}, {"epochs": 40, "weight_decay": 0.0}),
    "c39": ({**FIXED_SPLIT, "heldout_audio_uninformative_frac": 0.2}, {}, {"epochs": 40, "weight_decay": 0.0}),
    # criteria.md, addendum 12
    "c40": ({**FIXED_SPLIT, "heldout_audio_uninformative_frac": 0.2}, {}, {"epochs": 40, "weight_decay": 0.0,
                                                                          "lr": 0.02}),
    "c41": ({**FIXED_SPLIT, "heldout_audio_uninformative_frac": 0.2}, {}, {"epochs": 80, "weight_decay": 0.0}),
    # criteria.md, addendum 13
    "c42": ({**FIXED_SPLIT, "heldout_audio_uninformative_frac": 0.15}, {}, {"epochs": 40, "weight_decay": 0.0}),
    # criteria.md, addendum 14
    "c43": ({**FIXED_SPLIT, "heldout_audio_uninformative_frac": 0.2, "image_noise": 1.5}, {},
            {"epochs": 40, "weight_decay": 0.0}),
    "c44": ({**FIXED_SPLIT, "heldout_audio_uninformative_frac": 0.2}, {}, {"epochs": 160, "weight_decay": 0.0}),
    # criteria.md, addendum 15
    "c45": ({**FIXED_SPLIT, "heldout_audio_uninformative_frac": 0.15, "val_repeats": 5}, {},
            {"epochs": 40, "weight_decay": 0.0}),
    "c46": ({**FIXED_SPLIT, "heldout_audio_uninformative_frac": 0.2, "val_repeats": 5}, {},
            {"epochs": 40, "weight_decay": 0.0}),
}
MMCOSINE_ENCODER = {"norm": "batch"}
METHOD = {"init": "joint", "curve": "joint", "uni": "ensemble", "joint": "joint", "multi_loss": "multi_loss",
          "joint_2x": "joint", "multi_loss_2x": "multi_loss", "mmcosine": "mmcosine"}


def candidate_config(candidate: str, task: str, seed: int):
    """The RunConfig of one task: the digits_av cell of its method with the candidate's changes."""
    data, encoder, optim = CANDIDATES[candidate]
    cfg = get_preset("digits_av").run_config(METHOD[task], seed=seed, device="cpu")
    optim = {**optim, "epochs": optim.get("epochs", cfg.optim.epochs) * (2 if task.endswith("_2x") else 1)}
    if task == "mmcosine":                   # criteria.md, addendum 9: MMCosine as the v2 table runs it, on BatchNorm
        encoder = {**encoder, **MMCOSINE_ENCODER}
    return replace(cfg, data=replace(cfg.data, options={**cfg.data.options, **data}),
                   model=replace(cfg.model, encoder_options={**cfg.model.encoder_options, **encoder}),
                   optim=replace(cfg.optim, **optim))


def pairwise_cos(x: torch.Tensor) -> float:
    """Mean cosine between different rows of x (N, D)."""
    xn = torch.nn.functional.normalize(x, dim=1)
    return float(((xn @ xn.T).sum() - len(x)) / (len(x) * (len(x) - 1)))


def untrained_probes(candidate: str, seed: int) -> dict:
    """Linear probes (%) of the seeded, untrained encoders of the joint model."""
    torch.set_num_threads(1)
    cfg = candidate_config(candidate, "init", seed)
    splits = DATASETS.create(cfg.data.name, seed=cfg.seed, root=cfg.data.root, **cfg.data.options)
    probes = linear_probe(build_trainer(cfg, splits).trained, ["audio", "video"])
    return {"candidate": candidate, "task": "init", "seed": seed, "commit": git_commit(),
            **{f"probe_{m}": round(100 * p["test_accuracy"], 2) for m, p in probes.items()}}


def measure(candidate: str, task: str, seed: int) -> dict:
    """Train one task and return its measurements (accuracies and probes in %)."""
    if task == "init":
        return untrained_probes(candidate, seed)
    torch.set_num_threads(1)
    out = run(candidate_config(candidate, task, seed))
    rec, trained, pct = out.record, out.trained, lambda v: round(100 * v, 2)
    row = {"candidate": candidate, "task": task, "seed": seed, "seconds": round(rec["seconds"], 1),
           "commit": rec["environment"]["commit"], "epochs": rec["config"]["optim"]["epochs"]}
    if task == "curve":
        return row | selection_curve(rec, trained)
    if task == "mmcosine":                                   # collapse statistic only; its accuracy is not kept
        features, _ = trained.predict("test", key="features")
        return row | {f"cos_{m}": round(pairwise_cos(f), 4) for m, f in features.items()}
    row["fused"] = pct(rec["test"]["mm"]["accuracy"])
    if task == "uni":                                          # each member trained alone, probed on its modality
        row |= {m: pct(rec["members"][m]["test"]["mm"]["accuracy"]) for m in trained.model.members}
    if task in ("uni", "joint"):
        row |= {f"probe_{m}": pct(p["test_accuracy"]) for m, p in probe_encoders(trained, ["audio", "video"]).items()}
    return row


def selection_curve(record: dict, trained: Trained) -> dict:
    """Fused accuracy (%) per epoch on validation and test, the epoch picked on validation (the first to reach its
    maximum), and the test accuracy of the picked weights on the pairs whose audio is speech / noise."""
    pct = lambda v: round(100 * float(v), 2)
    logits, labels = trained.predict("test")                 # ({head: (N, C)}, (N,)) at the picked weights
    correct = logits["mm"].argmax(dim=1) == labels           # (N,)
    noise = torch.from_numpy(trained.loaders["test"].dataset.uninformative)  # (N,) pairs whose audio is noise
    return {"best_epoch": record["best_epoch"], "fused": pct(record["test"]["mm"]["accuracy"]),
            "fused_speech": pct(correct[~noise].float().mean()), "fused_noise": pct(correct[noise].float().mean()),
            "val_curve": [pct(h["val"]["mm"]["accuracy"]) for h in record["history"]],
            "test_curve": [pct(h["test"]["mm"]["accuracy"]) for h in record["history"]]}


def run_task(args: tuple[str, str, int, Path]) -> str:
    candidate, task, seed, folder = args
    path = folder / "runs" / candidate / f"{seed}_{task}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(measure(candidate, task, seed), indent=1))
    return str(path)


def load_runs(folder: Path = OUT) -> pd.DataFrame:
    return pd.DataFrame([json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*/*.json"))])


def criteria(runs: pd.DataFrame, candidate: str, seeds=ALL_SEEDS) -> dict:
    """The five criteria of criteria.md for one candidate on ``seeds`` (NaN where a task is missing)."""
    df = runs[(runs.candidate == candidate) & runs.seed.isin(seeds)]

    def col(task, name):
        values = df[df.task == task][name].dropna() if name in df else pd.Series(dtype=float)
        return values.to_numpy(float) if len(values) == len(seeds) else np.full(len(seeds), np.nan)

    std = lambda x: float(np.std(x, ddof=1))
    audio, video, ens = col("uni", "audio"), col("uni", "video"), col("uni", "fused")
    p_alone, p_joint = col("uni", "probe_video"), col("joint", "probe_video")
    gap = p_alone.mean() - p_joint.mean()
    out = {"n_seeds": len(seeds), "audio": audio.mean(), "video": video.mean(), "ensemble": ens.mean(),
           "probe_video_alone": p_alone.mean(), "probe_video_joint": p_joint.mean(),
           "dominance": audio.mean() - video.mean(), "complementarity": ens.mean() - max(audio.mean(), video.mean()),
           "suppression": gap, "suppression_2std": 2 * max(std(p_alone), std(p_joint)),
           "probe_video_untrained": col("init", "probe_video").mean()}               # diagnostic: random features
    out["pass_1"], out["pass_2"] = out["dominance"] >= 5, out["complementarity"] >= 5
    out["pass_3"] = gap >= 5 and gap >= out["suppression_2std"]
    for task in ("joint", "multi_loss"):
        acc, acc2 = col(task, "fused"), col(f"{task}_2x", "fused")
        out |= {task: acc.mean(), f"{task}_std": std(acc), f"{task}_2x": acc2.mean()}
    out["pass_4"] = all(abs(out[f"{t}_2x"] - out[t]) < out[f"{t}_std"] for t in ("joint", "multi_loss"))
    cos = [col("mmcosine", f"cos_{m}") for m in ("audio", "video")]
    out["max_cos"] = float(np.max(cos)) if not np.isnan(cos).any() else np.nan
    out["pass_5"] = bool(out["max_cos"] < 0.99)
    return out


def summarise(folder: Path = OUT, write: bool = True) -> pd.DataFrame:
    """candidates.csv: one row per candidate and stage (screen: 3 seeds, full: 5) whose screening tasks all ran on
    the stage's seeds, with every measurement (written to ``folder`` when ``write``)."""
    runs, rows = load_runs(folder), []
    for candidate in CANDIDATES:
        for stage, seeds in (("screen", SCREEN_SEEDS), ("full", ALL_SEEDS)):
            have = runs[(runs.candidate == candidate) & runs.seed.isin(seeds)] if len(runs) else runs
            if len(have) and all(set(have[have.task == t].seed) == set(seeds) for t in SCREEN_TASKS):
                data, encoder, optim = CANDIDATES[candidate]
                changes = json.dumps({**data, **encoder, **optim}, sort_keys=True)
                rows.append({"candidate": candidate, "stage": stage, "changes": changes,
                             **criteria(runs, candidate, seeds)})
    table = pd.DataFrame(rows).round(2)
    if write:
        table.to_csv(folder / "candidates.csv", index=False)
    return table


def choose(table: pd.DataFrame) -> dict | None:
    """chosen.json: the first candidate, in the registered order, whose five-seed row meets all five criteria."""
    full = table[(table.stage == "full") & table[[f"pass_{n}" for n in range(1, 6)]].all(axis=1)]
    if full.empty:
        return None
    first = min(full.candidate, key=list(CANDIDATES).index)
    data, encoder, optim = CANDIDATES[first]
    return {"candidate": first, "changes": {**data, **encoder, **optim}, "seeds": list(ALL_SEEDS),
            "rule": "the first candidate, in the order of criteria.md, meeting criteria 1-5 on the five seeds"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--stage", choices=("screen", "full"), default="screen")
    parser.add_argument("--tasks", default=None, help="comma-separated subset of the stage's tasks (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summarise", action="store_true", help="only rewrite candidates.csv (trains nothing)")
    parser.add_argument("--choose", action="store_true",
                        help="rewrite candidates.csv, then write chosen.json if a candidate meets every criterion "
                             "(trains nothing)")
    args = parser.parse_args()
    if not (args.summarise or args.choose):                  # --summarise / --choose train nothing
        seeds, tasks = (SCREEN_SEEDS, SCREEN_TASKS) if args.stage == "screen" else (ALL_SEEDS, ALL_TASKS)
        tasks = args.tasks.split(",") if args.tasks else tasks
        todo = [(c, t, s, args.out) for c in args.candidates.split(",") for t in tasks for s in seeds]
        start = time.perf_counter()
        with ProcessPoolExecutor(args.jobs) as pool:
            for done in pool.map(run_task, todo):
                print(done, f"{time.perf_counter() - start:.0f} s", flush=True)
    # Training only prints the summary: rewriting the tracked candidates.csv would make the checkout dirty, and every
    # later run in it would record a "+dirty" commit. --summarise / --choose write it, after the runs are copied back.
    table = summarise(args.out, write=args.summarise or args.choose)
    print(table.to_string())
    if args.choose:
        chosen = choose(table)
        if chosen is None:
            raise SystemExit("no candidate meets all five criteria on five seeds: chosen.json not written")
        (args.out / "chosen.json").write_text(json.dumps(chosen, indent=1) + "\n")
        print("chosen:", chosen)


if __name__ == "__main__":
    main()
