"""The book's shared tools: figures (each helper returns a matplotlib Figure) and the summaries of
committed results that the chapters print (paired differences, pooled calibration bins, the commands
that reproduce a table, MLB's time-averaged coefficients).

They serve the chapters, not the method, so they live beside the chapters rather than in ``mmbal``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from mmbal.presets import Preset, get_preset
from mmbal.sweep import table_dir
from mmbal.tables import STD_DDOF


# -- figures ---------------------------------------------------------------------------------------
HEAD_COLORS = {"mm": "black", "audio": "tab:blue", "video": "tab:orange"}


def _smooth(values, window: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    padded = np.pad(values, (window // 2, window - 1 - window // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def plot_head_accuracy(runs: dict[str, dict], split: str = "val", heads=None, ax=None):
    """Accuracy of every head over epochs; ``runs`` maps a label to a result record (or history)."""
    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.2), sharey=True, squeeze=False) \
        if ax is None else (ax.figure, np.array([[ax]]))
    for a, (label, run) in zip(axes.ravel(), runs.items()):
        history = run["history"] if isinstance(run, dict) and "history" in run else run
        names = heads or list(history[0][split])
        epochs = [r["epoch"] + 1 for r in history]
        for h in names:
            a.plot(epochs, [r[split][h]["accuracy"] for r in history], label=h,
                   color=HEAD_COLORS.get(h), lw=2 if h == "mm" else 1.5)
        a.set_title(label)
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"{split} accuracy")
    axes[0, -1].legend(title="head", fontsize=8)
    fig.tight_layout()
    return fig


def shade_outside_window(ax, history: list[dict], trace: dict[str, list] | None = None) -> None:
    """Grey bands over the epochs a windowed balancer did not modulate (``window`` 0 in their epoch record):
    x = optimisation step when ``trace`` (with its ``step`` and ``epoch`` columns) is given, else x = epoch."""
    off = [h["epoch"] for h in history if h.get("balancer", {}).get("window") == 0.0]
    for i, epoch in enumerate(off):                          # epoch e is drawn at x = e + 1 on an epoch axis
        steps = [s for s, e in zip(trace["step"], trace["epoch"]) if e == epoch] if trace else [epoch + 0.5]
        if steps:
            ax.axvspan(min(steps), max(steps) + 1, color="gray", alpha=0.15, lw=0,
                       label="outside window" if i == 0 else None)


def plot_trace(trace: dict[str, list], prefix: str = "coeff/", *, smooth: int = 1, ax=None,
               reference: float | None = 1.0, title: str | None = None, history: list[dict] | None = None):
    """Per-step trace curves whose names start with ``prefix`` (e.g. ``coeff/audio``); with the run's
    ``history``, the epochs outside a balancer's modulation window are shaded."""
    fig, ax = plt.subplots(figsize=(6, 3.2)) if ax is None else (ax.figure, ax)
    steps = trace.get("step", range(len(next(iter(trace.values())))))
    if "epoch" in trace:
        shade_outside_window(ax, history or [], trace)
    for key in sorted(k for k in trace if k.startswith(prefix)):
        name = key[len(prefix):]
        ax.plot(steps, _smooth(trace[key], smooth), label=name, color=HEAD_COLORS.get(name))
    if reference is not None:
        ax.axhline(reference, color="gray", ls="--", lw=1)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel(prefix.rstrip("/"))
    ax.set_title(title or prefix.rstrip("/"))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# -- balancer traces and method comparisons (chapters 5-7) ------------------------------------
REFERENCE_ONE = ("ratio", "coeff", "target", "lr_scale")   # quantities whose neutral value is 1


def _families(keys) -> dict[str, list[str]]:
    """``{"coeff": ["coeff/audio", "coeff/video"], ...}`` from ``family/modality`` keys."""
    out: dict[str, list[str]] = {}
    for key in keys:
        if "/" in key:
            out.setdefault(key.split("/", 1)[0], []).append(key)
    return out


def plot_balancer_trace(run: dict, *, families=None, smooth: int = 1, title: str | None = None, ax=None):
    """Every quantity a balancer reported: per-step columns of ``run["trace"]`` (x = step) and
    per-epoch values of ``run["history"][e]["balancer"]`` (x = epoch), one panel per family
    (``score``, ``ratio``, ``coeff``, ``lr_scale``, ...). ``run`` is a result record or a trace;
    ``ax`` (one Axes per panel) draws into an existing figure."""
    trace = run.get("trace", run) if isinstance(run, dict) else run
    history = run.get("history", []) if isinstance(run, dict) else []
    per_step = _families(k for k in trace if k not in ("step", "epoch"))
    per_epoch = _families(k for h in history[:1] for k in h.get("balancer", {}))
    panels = [("step", f, keys) for f, keys in per_step.items()] + \
             [("epoch", f, keys) for f, keys in per_epoch.items()]
    if families is not None:
        panels = [p for p in panels if p[1] in families]
    if not panels:
        raise ValueError("this run has no balancer trace to plot (no 'family/modality' columns)")
    if ax is None:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    else:
        axes = np.atleast_1d(ax)
        if axes.size != len(panels):
            raise ValueError(f"got {axes.size} axes for {len(panels)} panels: {[p[1] for p in panels]}")
        fig = axes.ravel()[0].figure
    for ax, (axis, family, keys) in zip(axes.ravel(), panels):
        if axis == "step":
            x = trace.get("step", range(len(trace[keys[0]])))
            series = {k: _smooth(trace[k], smooth) for k in keys}
        else:
            x = [h["epoch"] + 1 for h in history]
            series = {k: [h["balancer"].get(k, np.nan) for h in history] for k in keys}
        if axis == "epoch" or "epoch" in trace:
            shade_outside_window(ax, history, trace if axis == "step" else None)
        for key, values in sorted(series.items()):
            name = key.split("/", 1)[1]
            ax.plot(x, values, label=name, color=HEAD_COLORS.get(name),
                    marker="o" if axis == "epoch" else None, ms=3)
        if family in REFERENCE_ONE:
            ax.axhline(1.0, color="gray", ls="--", lw=1)
        ax.set_title(f"{family} (per {axis})")
        ax.set_xlabel("optimisation step" if axis == "step" else "epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def summarize_runs(runs: dict, *, split: str = "test", heads=("mm", "audio", "video"), metric: str = "accuracy"):
    """Mean, std (np.std, as the paper) and count of ``metric`` per method and head.

    ``runs`` maps a method label to one result record or a list of them (seeds); returns a
    DataFrame indexed by method with columns ``<head>_mean``, ``<head>_std`` and ``n``."""
    rows = {}
    for label, records in runs.items():
        records = records if isinstance(records, (list, tuple)) else [records]
        row = {"n": len(records)}
        for h in heads:
            values = [r[split][h][metric] for r in records if h in r[split]]
            row[f"{h}_mean"] = float(np.mean(values)) if values else np.nan
            row[f"{h}_std"] = float(np.std(values)) if values else np.nan
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def plot_method_comparison(runs: dict, *, split: str = "test", heads=("mm", "audio", "video"),
                           chance: float | None = None, title: str | None = None, ax=None):
    """One bar per method: fused accuracy (mean +- std over seeds); dots: the unimodal heads
    (the probes / heads of the same model), so one figure shows accuracy and balance."""
    table = summarize_runs(runs, split=split, heads=heads)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.62 * len(table) + 1.5), 3.6)) if ax is None else (ax.figure, ax)
    x = np.arange(len(table))
    fused = heads[0]
    ax.bar(x, table[f"{fused}_mean"], yerr=table[f"{fused}_std"].fillna(0), color="lightgray",
           edgecolor="black", capsize=3, label=f"{fused} (fused)")
    for i, h in enumerate(heads[1:]):
        ax.scatter(x + (i - 0.5 * (len(heads) - 2)) * 0.18, table[f"{h}_mean"], color=HEAD_COLORS.get(h),
                   zorder=3, s=22, label=f"{h} head")
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1, label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels(table.index, rotation=45, ha="right")
    ax.set_ylabel(f"{split} accuracy")
    n = sorted(set(table["n"]))
    ax.set_title(title or f"{split} accuracy (mean ± std over {'/'.join(map(str, n))} run(s))")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


# -- committed results: records, paired differences, calibration, commands -----------------------
def load_records(results: str | Path, table: str, method: str, fusion: str, *,
                 fast: bool = False) -> dict[int, dict]:
    """Seed -> full result record of one table cell (histories, traces, reliability bins)."""
    out = {}
    for path in sorted((table_dir(results, table, fast=fast) / "runs").glob(f"{method}__{fusion}__seed*.json")):
        with open(path) as fh:
            record = json.load(fh)
        out[int(record["cell"]["seed"])] = record
    return dict(sorted(out.items()))

def paired_t_pvalue(diffs) -> float:
    """Two-sided p-value of a paired t-test on per-seed differences (NaN below two seeds or when
    every difference is the same): t = mean / (sample std / sqrt(n)), n - 1 degrees of freedom."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2 or np.all(d == d[0]):
        return float("nan")
    return float(stats.ttest_1samp(d, 0.0).pvalue)

def paired_difference(runs: pd.DataFrame, a: str, b: str, *, fusion: str = "concat",
                      column: str = "test_accuracy") -> dict[str, Any]:
    """Method a minus method b, paired by seed (same data split and initialisation seed)."""
    pick = lambda m: runs[(runs["method"] == m) & (runs["fusion"] == fusion)].set_index("seed")[column]  # noqa: E731
    xa, xb = pick(a), pick(b)
    seeds = sorted(set(xa.index) & set(xb.index))
    d = (xa.loc[seeds] - xb.loc[seeds]).to_numpy(dtype=float)
    noise = max(float(xa.std(ddof=STD_DDOF)), float(xb.std(ddof=STD_DDOF))) if seeds else np.nan
    out = {"a": a, "b": b, "n": len(seeds), "diff": float(d.mean()) if len(d) else np.nan,
           "diff_std": float(d.std(ddof=STD_DDOF)) if len(d) else np.nan, "wins": int((d > 0).sum()),
           "seed_std": noise, "p_paired_t": paired_t_pvalue(d)}
    out["verdict"] = ("no paired seeds" if not seeds else "one seed: no verdict" if len(seeds) < 2
                      else "within seed noise" if abs(out["diff"]) <= noise
                      else ("better" if out["diff"] > 0 else "worse") + " beyond the seed std")
    return out

def pooled_bins(records: dict[int, dict], head: str = "mm") -> dict[str, list] | None:
    """Reliability bins summed over seeds (counts add; confidence and accuracy count-weighted)."""
    bins = [r["reliability"]["test"][head] for r in records.values()
            if head in r.get("reliability", {}).get("test", {})]
    if not bins:
        return None
    count = np.sum([b["count"] for b in bins], axis=0)
    w = lambda key: np.sum([np.asarray(b[key]) * np.asarray(b["count"]) for b in bins], axis=0)  # noqa: E731
    safe = np.maximum(count, 1)
    return {"count": count.tolist(), "confidence": (w("confidence") / safe).tolist(),
            "accuracy": (w("accuracy") / safe).tolist()}

def provenance(summary: pd.DataFrame) -> pd.DataFrame:
    """Per row: where the numbers come from (commit, hardware, dataset, seeds, FAST or full)."""
    cols = ["method", "fusion", "n", "seeds", "folds", "dataset", "fast", "commit", "hardware", "torch"]
    return summary[[c for c in cols if c in summary.columns]]

def reproduce_commands(preset: str | Preset, *, shards: int = 1) -> list[str]:
    """The commands that produce a table's "this book" numbers (data preparation, sweep, table)."""
    preset = get_preset(preset)
    cmds = []
    root = f"~/mmbal_data/{preset.dataset}/cache"
    if preset.needs_gpu:
        cmds.append(f"python -m data_scripts.{preset.dataset} all --download "
                    f"--raw ~/mmbal_data/{preset.dataset}/raw --cache {root}")
    if preset.data_options.get("inputs") == "features":        # the Conformer table's pre-extracted sequences
        cmds.append(f"python -m data_scripts.{preset.dataset} features --raw ~/mmbal_data/{preset.dataset}/raw "
                    f"--cache {root} --device cuda")
    data = f" --data-root {root}" if preset.needs_gpu else ""
    device = " --device cuda" if preset.needs_gpu else ""
    if shards > 1:
        gpu = lambda i: f"CUDA_VISIBLE_DEVICES={i} " if preset.needs_gpu else ""    # noqa: E731
        cmds += [f"{gpu(i)}python -m mmbal table sweep {preset.name}{data}{device} "
                 f"--shard {i}/{shards} &" for i in range(shards)] + ["wait"]
    else:
        cmds.append(f"python -m mmbal table sweep {preset.name}{data}{device}")
    cmds.append(f"python -m mmbal table summary {preset.name}")
    return cmds


# -- MLB's coefficients over training (chapters 9 and 10) ----------------------------------------
def coefficient_averages(trace: dict[str, list], modalities: Iterable[str] = ("audio", "video")) -> pd.DataFrame:
    """Mean k per modality over all stored steps, over the first and over the last epoch."""
    if "epoch" not in trace:
        raise ValueError("trace has no 'epoch' column; was it written by mmbal.train?")
    epoch = np.asarray(trace["epoch"])
    rows = {}
    for m in modalities:
        key = f"coeff/{m}"
        if key not in trace:
            raise ValueError(f"trace has no {key!r}; it holds {sorted(trace)}")
        k = np.asarray(trace[key], dtype=float)                          # (steps,)
        rows[m] = {"all steps": k.mean(), "first epoch": k[epoch == epoch.min()].mean(),
                   "last epoch": k[epoch == epoch.max()].mean()}
    return pd.DataFrame(rows).T.rename_axis("modality")


def fixed_k_from_records(records: dict[int, dict], modalities: Iterable[str] = ("audio", "video"),
                         digits: int = 2) -> dict[str, float]:
    """The fixed-k control's constants: the time-average of k over all steps, mean over seeds."""
    if not records:
        raise ValueError("fixed_k_from_records: no runs given")
    modalities = list(modalities)
    per_seed = [coefficient_averages(r["trace"], modalities)["all steps"] for r in records.values()]
    mean = pd.concat(per_seed, axis=1).mean(axis=1)                      # modality -> mean k
    return {m: round(float(mean[m]), digits) for m in modalities}


# -- committed multi-seed results as figures (chapters 3, 4 and 7) -------------------------------
from mmbal.tables import read_summary, summary_path  # noqa: E402


def committed_runs(results: str | Path, table: str, cells: dict[str, tuple[str, str]]) -> dict[str, list[dict]]:
    """Label -> the committed records of a (method, fusion) cell, one per seed; cells without runs are left out."""
    runs = {label: list(load_records(results, table, m, f).values()) for label, (m, f) in cells.items()}
    return {label: records for label, records in runs.items() if records}


def committed_provenance(results: str | Path, table: str, cells: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """``provenance`` of a table's summary, restricted to the (method, fusion) cells a figure shows."""
    summary = read_summary(summary_path(results, table))
    keep = [(m, f) in set(cells) for m, f in zip(summary["method"], summary["fusion"])]
    return provenance(summary[keep]).dropna(axis=1, how="all").reset_index(drop=True)   # no empty 'folds' column


def plot_heads_comparison(runs: dict[str, list[dict]], *, split: str = "test", heads=("mm", "audio", "video"),
                          chance: float | None = None, title: str | None = None, ax=None):
    """Grouped bars per method, one per head: accuracy, mean ± std over seeds (error bars, np.std)."""
    table = summarize_runs(runs, split=split, heads=heads)
    fig, ax = plt.subplots(figsize=(max(7.5, 0.75 * len(table) + 2.5), 3.6)) if ax is None else (ax.figure, ax)
    x, width = np.arange(len(table)), 0.8 / len(heads)
    for i, h in enumerate(heads):
        ax.bar(x + (i - (len(heads) - 1) / 2) * width, table[f"{h}_mean"], width, yerr=table[f"{h}_std"],
               color="0.75" if h == "mm" else HEAD_COLORS.get(h), edgecolor="black", lw=0.5, capsize=2,
               error_kw={"lw": 1}, label=f"{h} (fused)" if h == "mm" else f"{h} head")
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1, label="chance")
    ax.set_xticks(x)
    tilt = len(table) > 4 or max(map(len, table.index)) > 10
    ax.set_xticklabels(table.index, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylabel(f"{split} accuracy")
    n = sorted(set(table["n"]))
    ax.set_title(title or f"{split} accuracy per head (mean ± std over {'/'.join(map(str, n))} seeds)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_mean_curves(runs: dict[str, list[dict]], *, split: str = "val", heads=("mm", "audio", "video"),
                     title: str | None = None):
    """One panel per head: accuracy per epoch from each record's ``history``, mean over seeds (line) ± std (band)."""
    fig, axes = plt.subplots(1, len(heads), figsize=(3.8 * len(heads), 3.2), sharey=True, squeeze=False)
    for ax, h in zip(axes.ravel(), heads):
        for i, (label, records) in enumerate(runs.items()):
            curves = [[e[split][h]["accuracy"] for e in r["history"]] for r in records if h in r["history"][0][split]]
            if not curves:
                continue
            acc, color = np.array(curves), f"C{i}"                          # (seeds, epochs)
            epochs = np.arange(1, acc.shape[1] + 1)
            ax.plot(epochs, acc.mean(0), label=label, color=color)
            ax.fill_between(epochs, acc.mean(0) - acc.std(0), acc.mean(0) + acc.std(0), color=color, alpha=0.15, lw=0)
        ax.set_title(f"{h} head" if h != "mm" else "fused (mm)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"{split} accuracy")
    handles = {l: h for a in axes.ravel() for h, l in zip(*a.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), fontsize=8, ncol=min(len(handles), 6), loc="lower center")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 + 0.05 * ((len(handles) - 1) // 6), 1, 1))
    return fig


# -- sentences chosen by the committed numbers (chapters 1, 8e, 9 and 10) -------------------------
FADE_RULE = 0.5     # k "fades towards 1" when mean |k - 1| in the last epoch < FADE_RULE x the first epoch's


def coefficient_fading(records: dict[int, dict], modalities: Iterable[str] = ("audio", "video")) -> pd.DataFrame:
    """Per modality: mean |k - 1| over the steps of the first and of the last epoch (mean over seeds),
    their ratio, and on how many seeds |k - 1| was smaller in the last epoch than in the first."""
    rows = {}
    for m in modalities:
        first, last = [], []
        for r in records.values():
            epoch, k = np.asarray(r["trace"]["epoch"]), np.asarray(r["trace"][f"coeff/{m}"], dtype=float)  # (steps,)
            first.append(np.abs(k[epoch == epoch.min()] - 1).mean())
            last.append(np.abs(k[epoch == epoch.max()] - 1).mean())
        first, last = np.array(first), np.array(last)                     # (seeds,)
        rows[m] = {"|k-1| first epoch": first.mean(), "|k-1| last epoch": last.mean(),
                   "last / first": last.mean() / first.mean(), "seeds closer to 1": f"{(last < first).sum()}/{len(first)}"}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("modality")     # numeric columns stay float


def fading_sentence(fading: pd.DataFrame, who: str = "MLB") -> str:
    """One sentence per modality, chosen by FADE_RULE: fades towards 1 / moves towards 1 by less than the
    rule asks / moves away from 1, with the numbers it used."""
    parts = []
    for m, r in fading.iterrows():
        ratio = r["last / first"]
        verdict = ("fades towards 1" if ratio < FADE_RULE else "moves towards 1, but by less than the rule asks"
                   if ratio < 1 else "does not fade, it ends further from 1 than it starts")
        parts.append(f"{who}, k_{m}:\n    {verdict}\n    (mean |k - 1| {r['|k-1| first epoch']:.3f} in the first epoch, "
                     f"{r['|k-1| last epoch']:.3f} in the last,\n    ratio {ratio:.2f}; closer to 1 on "
                     f"{r['seeds closer to 1']} seeds)")
    return ";\n".join(parts) + f".\nRule: 'fades' means a last-to-first ratio below {FADE_RULE}."


def difference_sentence(d: dict[str, Any], a: str, b: str, what: str = "fused accuracy") -> str:
    """A paired difference (``paired_difference``) as a sentence: mean ± std in points, seeds won, p, verdict."""
    if d["n"] < 2:
        return f"{a} - {b} ({what}): {d['n']} paired seeds, no verdict"
    return (f"{a} - {b}: {100 * d['diff']:+.1f} ± {100 * d['diff_std']:.1f} points {what},\n    {a} ahead on "
            f"{d['wins']} of {d['n']} seeds, paired t-test p = {d['p_paired_t']:.3f}; rule: {d['verdict']}")


# -- the paper-table chapters (8a-8d) -------------------------------------------------------------
import torch                                                    # noqa: E402

from mmbal.balancers.mlb import coefficients_from_ratios       # noqa: E402
from mmbal.presets import DATASET_SHAPES, reference_numbers    # noqa: E402
from mmbal.sweep import shapes_key                              # noqa: E402

K_RATIOS = (0.25, 0.5, 1.0, 2.0, 4.0)      # r_m = (mean score of the others) / s_m: > 1 for the weaker modality


def dataset_facts(preset: str | Preset) -> pd.DataFrame:
    """A table's data as ``mmbal table estimate`` sizes it (presets.yaml ``dataset_shapes``): classes, clips, inputs."""
    preset = get_preset(preset)
    d = DATASET_SHAPES[shapes_key(preset)]
    rows = [("classes", d["num_classes"]), ("train / val / test clips (one fold)", " / ".join(f"{n:,}" for n in d["sizes"]))]
    rows += [(f"{m} input per clip", " x ".join(map(str, s))) for m, s in d["shapes"].items()]
    return pd.DataFrame(rows, columns=["", shapes_key(preset)]).set_index("")


def modality_strength(preset: str | Preset) -> pd.DataFrame:
    """The reference unimodal accuracies of a table (mean, std in %); ``attrs``: the leading modality and the gap."""
    ref = reference_numbers(get_preset(preset).reference)
    out = pd.DataFrame({m: {"mean %": ref[f"unimodal_{m}"][0], "std %": ref[f"unimodal_{m}"][1]}
                        for m in ("audio", "video")}).T
    out.attrs = {"leader": out["mean %"].idxmax(), "gap": float(out["mean %"].max() - out["mean %"].min())}
    return out


def mlb_k(ratios, alpha: float, beta: float | None) -> np.ndarray:
    """MLB's k at each ratio r (mmbal.balancers.mlb): 1 + (beta - 1) tanh(alpha (r - 1)) for r > 1 and
    1 + tanh(alpha (r - 1)) otherwise; beta None is the uncapped k = 1 + tanh(alpha (r - 1)) (Kontras et al., BMVC 2024)."""
    r = torch.as_tensor(np.asarray(ratios, dtype=float))          # (n,) ratios
    return coefficients_from_ratios({"m": r}, alpha, beta)["m"].numpy()


def k_verdict(alpha: float, beta: float | None) -> str:
    """What MLB does to the weaker modality (r > 1) at these settings, from k evaluated on r in (1, 50]."""
    top = float(mlb_k(np.linspace(1.01, 50.0, 500), alpha, beta).max())
    if top > 1 + 1e-6:
        return f"accelerates the weaker modality (k up to {top:.2f})"
    if top > 1 - 1e-6:
        return "never accelerates: k = 1 for the weaker modality, only the leader is slowed"
    low = float(mlb_k(np.linspace(1.01, 50.0, 500), alpha, beta).min())
    return f"slows the weaker modality too (k from {low:.2f} to 1), the leader more"


def mlb_k_table(preset: str | Preset, ratios=K_RATIOS) -> pd.DataFrame:
    """MLB's k (``mlb_k``) at ``ratios`` for each fusion column's MLB options of a table, and the uncapped form."""
    preset = get_preset(preset)
    settings = [(f"{f} (this table)", preset.method("mlb", f).options) for f in preset.fusions
                if ("mlb", f) in preset.cells()]
    settings = [(name, o["alpha"], o.get("beta_max")) for name, o in settings]
    settings.append(("uncapped, same alpha (BMVC-era form)", settings[0][1], None))
    rows = [{"setting": name, "alpha": a, "beta_max": "none" if b is None else b,
             **{f"k at r={r:g}": round(float(k), 3) for r, k in zip(ratios, mlb_k(ratios, a, b))},
             "verdict": k_verdict(a, b)} for name, a, b in settings]
    return pd.DataFrame(rows).set_index("setting")


def plot_mlb_k(table: pd.DataFrame):
    """k against the ratio r for every setting of ``mlb_k_table`` (r > 1: the weaker modality)."""
    r = np.linspace(0.05, 4.0, 400)                                  # (400,) ratios
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for name, row in table.iterrows():
        beta = None if row["beta_max"] == "none" else float(row["beta_max"])
        ax.plot(r, mlb_k(r, float(row["alpha"]), beta), label=f"{name}: alpha {row['alpha']:g}, beta {row['beta_max']}")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("ratio r (> 1: the modality lags)")
    ax.set_ylabel("coefficient k")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def table_cost(preset: str | Preset) -> pd.DataFrame:
    """Per row: runs (fusions x seeds), steps per epoch at the preset's batch (train clips of ``dataset_facts``) and
    the training steps of all its runs, from the early-stopping bound (early_stop + 1 epochs) to the epoch cap."""
    preset = get_preset(preset)
    train = DATASET_SHAPES[shapes_key(preset)]["sizes"][0]
    rows = []
    for method in preset.methods:
        fusions = [f for m, f in preset.cells() if m == method]
        optim = preset.run_config(method, fusions[0]).optim
        least = min(optim.early_stop + 1, optim.epochs) if optim.early_stop else optim.epochs
        steps, runs = -(-train // preset.batch_size), len(fusions) * len(preset.seeds)
        rows.append({"method": method, "runs": runs, "steps/epoch": steps, "epochs": f"{least}-{optim.epochs}",
                     "steps, fewest": runs * steps * least, "steps, most": runs * steps * optim.epochs})
    return pd.DataFrame(rows).set_index("method")
