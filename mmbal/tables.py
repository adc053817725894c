"""Results -> tables: a table's result JSONs -> mean ± population std (``np.std``, ddof=0, as the MLB
paper) over seeds/folds per row and column, each row with its provenance (commits, hardware, seeds, epochs,
FAST, runs of another config); a cell with fewer seeds than the preset shows e.g. "13.8 ± 0.0 (1 of 3)"."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmbal.experiments import check_writable, read_json
from mmbal.presets import PRESETS, Preset, get_preset, reference_numbers
from mmbal.sweep import record_mismatch, table_dir

STD_DDOF = 0                                    # population std, np.std (as the paper)
METRICS = ("accuracy", "macro_f1", "ece")
NOT_RUN = "not yet run"


def ece_from_bins(bins: dict[str, list]) -> float:
    """ECE = sum_b |b| / N * |accuracy_b - confidence_b| from a run's stored ``metrics.reliability_bins``."""
    count = np.asarray(bins["count"], dtype=float)
    gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))
    return float((count * gap).sum() / count.sum())


# -- loading -------------------------------------------------------------------------------------
def primary_head(test: dict[str, Any]) -> str:
    """The head a table reports: the fused one ("mm"), or the only head of a unimodal run."""
    return "mm" if "mm" in test or len(test) != 1 else next(iter(test))


def run_row(record: dict[str, Any], path: str | Path = "") -> dict[str, Any]:
    """One flat row per result: the cell, provenance, and test/val metrics of every head."""
    if "diverged" in record:
        raise ValueError(f"the run diverged: {record['diverged']}")
    cfg, env, cell = record["config"], record.get("environment", {}), record.get("cell", {})
    options = cfg["data"].get("options", {})
    row = {"table": cell.get("table"), "method": cell.get("method"),
           "fusion": cell.get("fusion", cfg["model"]["fusion"]), "seed": cell.get("seed", cfg["seed"]),
           "fast": bool(cell.get("fast", cfg.get("fast", False))), "dataset": cfg["data"]["name"],
           "fold": next((options[k] for k in ("fold", "split") if k in options), None), "commit": env.get("commit"),
           "hardware": f"{env['gpu']} (cuda{', bf16' * bool(cfg.get('amp'))})" if env.get("gpu") else
           f"cpu {env.get('cpu', '?')}, {env.get('cpu_threads', '?')} threads", "torch": env.get("torch"),
           "epochs": cfg.get("optim", {}).get("epochs"), "epochs_run": len(record.get("history", [])),
           "best_epoch": record.get("best_epoch"), "seconds": record.get("seconds"), "path": str(path)}
    head = primary_head(record["test"])
    row.update({f"{s}_{metric}": record[s][head][metric] for metric in METRICS for s in ("test", "val")})
    row.update({f"{s}_{h}_{metric}": values[metric] for s in ("test", "val")
                for h, values in record[s].items() for metric in METRICS})
    return {**row, **{f"test_probe_{m}_accuracy": probe["test_accuracy"]       # mmbal.probe: frozen-encoder probe
                      for m, probe in record.get("linear_probe", {}).items()}}


def load_runs(results: str | Path, table: str, *, fast: bool = False) -> pd.DataFrame:
    """All result JSONs of a table (one row each; empty frame if none), ``config_differs`` saying how a run's
    config differs from its preset cell's; unreadable files are left out, listed in ``.attrs["unreadable"]``."""
    rows, unreadable = [], []
    for path in sorted((table_dir(results, table, fast=fast) / "runs").glob("*.json")):
        try:
            row = run_row(record := read_json(path), path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            unreadable.append(f"{path}: {type(err).__name__}: {err}")
            continue
        rows.append({**row, "config_differs": _differs(record, table, row)})
    runs = pd.DataFrame(rows)
    runs.attrs["unreadable"] = unreadable
    return runs


def _differs(record: dict[str, Any], table: str, row: dict[str, Any]) -> str | None:
    """How a run's config differs from its preset cell's ("" if not; None for a table that is no preset)."""
    if table not in PRESETS:
        return None
    try:
        want = get_preset(table).run_config(row["method"], row["fusion"], row["seed"], fast=row["fast"])
    except (ValueError, KeyError, TypeError) as err:
        return f"not a cell of {table} ({err})"
    return record_mismatch(record, want) or ""


# -- aggregation -----------------------------------------------------------------------------------
def _join(values, *, unique: bool = True) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return ";".join(str(v) for v in (dict.fromkeys(values) if unique else values))


def summarize(runs: pd.DataFrame, preset: str | Preset | None = None) -> pd.DataFrame:
    """Mean and population std over seeds of every metric, per (method, fusion), with provenance."""
    if runs.empty:
        return pd.DataFrame()
    metric_cols = [c for c in runs.columns if c.startswith(("test_", "val_"))]
    rows = []
    for (method, fusion), g in runs.groupby(["method", "fusion"], sort=False):
        g = g.sort_values("seed")
        row = {"method": method, "fusion": fusion, "n": len(g), "seeds": _join(g["seed"], unique=False),
               "folds": _join(g["fold"], unique=False), "dataset": _join(g["dataset"]), "fast": bool(g["fast"].any()),
               "commit": _join(g["commit"]), "hardware": _join(g["hardware"]), "torch": _join(g["torch"]),
               "epochs": _join(g.get("epochs", [])), "seconds_mean": float(g["seconds"].mean()),
               "other_config": int((g.get("config_differs", pd.Series(dtype=str)).fillna("") != "").sum())}
        for c in metric_cols:
            values = g[c].dropna().to_numpy(dtype=float)
            row[f"{c}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{c}_std"] = float(values.std(ddof=STD_DDOF)) if len(values) else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    if preset is not None:
        preset = get_preset(preset)
        order = {cell: i for i, cell in enumerate(preset.cells())}
        out["label"] = [preset.methods[m].label if m in preset.methods else m for m in out["method"]]
        out = out.assign(_o=[order.get((m, f), len(order)) for m, f in zip(out["method"], out["fusion"])])
        out = out.sort_values("_o").drop(columns="_o").reset_index(drop=True)
    return out


def summary_path(results: str | Path, table: str, *, fast: bool = False) -> Path:
    return table_dir(results, table, fast=fast) / "summary.csv"


def write_summary(table: str, results: str | Path, out: str | Path | None = None, *, fast: bool = False,
                  runs: pd.DataFrame | None = None) -> tuple[Path | None, pd.DataFrame]:
    """Aggregate a table's JSONs (or ``runs`` loaded from them) into the book's CSV; (None, empty) if none."""
    summary = summarize(load_runs(results, table, fast=fast) if runs is None else runs, table)
    if summary.empty:
        return None, summary
    path = check_writable(Path(out) if out else summary_path(results, table, fast=fast))
    path.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(path, index=False, float_format="%.6g")
    return path, summary


def read_summary(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=True, dtype={"seeds": str, "folds": str})


# -- presentation ----------------------------------------------------------------------------------
def format_pm(mean: float, std: float, *, percent: bool = True, digits: int = 1) -> str:
    """``71.9 ± 2.2`` (percent) from fractions; NaN -> "not yet run"."""
    if mean is None or np.isnan(mean):
        return NOT_RUN
    scale = 100.0 if percent else 1.0
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def cell_note(row, seeds: int) -> str:
    """`` (1 of 3)`` for a cell short of the preset's seeds (1 if FAST), plus its runs of another config; "" if not."""
    want = 1 if bool(row.get("fast", False)) else seeds
    notes = [f"{row['n']} of {want}"] if row["n"] < want else []
    notes += [f"{row['other_config']} not the preset's config"] if row.get("other_config", 0) > 0 else []
    return f" ({', '.join(notes)})" if notes else ""


def accuracy_table(summary: pd.DataFrame, preset: str | Preset, *, column: str = "test_accuracy",
                   percent: bool = True, digits: int = 1) -> pd.DataFrame:
    """Rows = the preset's methods, columns = its fusions; "mean ± std" or "not yet run"/"—"."""
    preset = get_preset(preset)
    cells = set(preset.cells())
    index = {m: preset.methods[m].label for m in preset.methods}
    table = pd.DataFrame([[NOT_RUN if (m, f) in cells else "—" for f in preset.fusions] for m in index],
                         index=pd.Index(list(index.values()), name="method"), columns=list(preset.fusions))
    for _, r in (summary.iterrows() if not summary.empty else []):
        if (r["method"], r["fusion"]) in cells:
            value = format_pm(r[f"{column}_mean"], r[f"{column}_std"], percent=percent, digits=digits)
            table.loc[index[r["method"]], r["fusion"]] = value + cell_note(r, len(preset.seeds))
    return table


def paper_table(summary: pd.DataFrame, preset: str | Preset) -> pd.DataFrame:
    """The book's accuracy table with the reference numbers (MCR Table 1) beside the main (late concat) fusion."""
    preset = get_preset(preset)
    table = accuracy_table(summary, preset)
    if preset.reference is not None:
        ref = reference_numbers(preset.reference)
        table.insert(1, "reference: MCR Table 1", [f"{v[0]:.1f} ± {v[1]:.1f}" if (v := ref.get(m)) else "not reported"
                                                   for m in preset.methods])
        table = table.rename(columns={preset.fusion: f"this book ({preset.fusion})"})
    return table


def compare_runs(reference: pd.DataFrame, rerun: pd.DataFrame, *, column: str = "test_accuracy") -> pd.DataFrame:
    """A re-run against the reference runs per cell (method, fusion, seed) in both: both values, their difference
    and the reference cell's seed std (population std over its seeds), the yardstick of "within seed noise"."""
    key = ["method", "fusion", "seed"]
    std = reference.groupby(["method", "fusion"])[column].std(ddof=STD_DDOF).rename("seed_std")
    both = reference[key + [column]].merge(rerun[key + [column]], on=key, suffixes=("_reference", "_rerun"))
    both = both.join(std, on=["method", "fusion"])
    both["difference"] = both[f"{column}_rerun"] - both[f"{column}_reference"]
    both["identical"] = both["difference"] == 0
    both["within_seed_std"] = both["difference"].abs() <= both["seed_std"]
    return both.sort_values(key, kind="stable").reset_index(drop=True)
