"""Write (or check) the four paper-table chapters 8a-8d from one template.

The cells below are the template; ``scripts/table_chapters.yaml`` holds what is specific to each table (its
dataset, which modality leads, the protocol, MLB's caveat, extra sections, exercises). ``{{name}}`` in a cell is
replaced by that table's text; ``insert: name`` puts the table's own cells there; ``when: name`` keeps a cell only
for the tables that set that flag. The Colab badge and bootstrap cell come from ``scripts/colab_cells.py``.

    python scripts/table_chapters.py           # check: exit 1 and name the chapters that differ
    python scripts/table_chapters.py --write   # rewrite book/08a-08d from the template
"""
import hashlib
import json
import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colab_cells import badge_line, bootstrap_source, pinned  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONTENT = Path(__file__).with_suffix(".yaml")
FIELD = re.compile(r"\{\{(\w+)\}\}")

TEMPLATE = [
    {"md": "# {{title}}\n\n{{intro}}\n\n{{badge}}"},
    {"code": "{{bootstrap}}", "tags": ["remove-cell"]},
    {"md": "## Learning goals\n\n{{goals}}"},
    {"code": '''import os
import warnings
from pathlib import Path

import pandas as pd
import torch

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm's notebook bars need ipywidgets

FAST = os.environ.get("MMBAL_FAST", "1") == "1"
TABLE = "{{table}}"                 # the preset behind this table (mmbal/presets.yaml)
DATA_ROOT = os.environ.get("MMBAL_DATA_ROOT")  # full mode: the cache written by data_scripts/
RESULTS = Path(os.environ.get("MMBAL_RESULTS", "results"))   # the committed results; full mode writes here
METHODS = None       # full mode: None runs every row, a list only those rows
FUSIONS = None       # full mode: None runs every fusion column
SEEDS = None         # full mode: None runs the preset's seeds (each with its fold)
EPOCHS = None        # full mode: None trains as the paper (early stopping); a number caps every run
TRY_EPOCHS = 2       # "Try it": epochs of each Digits-AV run
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pd.set_option("display.max_colwidth", 90)
pd.set_option("display.max_rows", 200)        # the hyperparameter tables in full''', "tags": ["parameters"]},
    {"md": '''```{admonition} FAST and full mode
:class: important
By default this page runs in **FAST** mode (`MMBAL_FAST=1`): it trains nothing on {{dataset_name}}, shows the
reference numbers beside this book's committed results (or "not yet run"), and its "Try it" section runs
this table's MLB settings on the embedded Digits-AV dataset for a few epochs, so it builds on a CPU in
seconds. With `MMBAL_FAST=0` and `MMBAL_DATA_ROOT` set to a prepared cache, the cell under "Running the
table" runs the sweep (all of it, or the `METHODS`, `FUSIONS`, `SEEDS` and `EPOCHS` of the parameters cell)
into `MMBAL_RESULTS` (default: the book's `results/`), writes the summary, and the table shows it.
```'''},
    {"md": "## The dataset\n\n{{dataset}}"},
    {"code": '''from booktools import dataset_facts
from mmbal.presets import get_preset

preset = get_preset(TABLE)
print(f"{preset.title}: {len(preset.cells())} (method, fusion) cells x {len(preset.seeds)} seeds = "
      f"{len(preset.cells()) * len(preset.seeds)} runs")
dataset_facts(preset)'''},
    {"insert": "extra_cells"},
    {"md": '''## Which modality leads

{{dominance}}

The cell reads the unimodal rows of the reference numbers (the authors' re-run, {cite:p}`kontras2025mcr`,
Table 1, stored in `mmbal/presets_reference.csv`) and checks the claim of this section against them.'''},
    {"code": '''from booktools import modality_strength

strength = modality_strength(preset)
leader, gap = strength.attrs["leader"], strength.attrs["gap"]
assert leader == "{{leader}}", "the prose of this section names the other modality"
print(f"reference unimodal accuracy: {leader} leads by {gap:.1f} points "
      f"({gap / strength['std %'].max():.1f} times the larger seed std)")
strength'''},
    {"md": '''## The rows and their hyperparameters

A *preset* is data (`mmbal/presets.yaml`): the dataset, encoder, optimiser, the rows (an objective plus a
balancer with its options, or a training regime) and the fusion columns. The first table holds the values
every row shares, the second each row's own (`@ fusion`: only at that fusion column), and the folded third
the balancer options a row leaves at mmbal's defaults; each value names its source (the MLB code's `run.sh` and
configs of either era, or this book's choice). `python -m mmbal table show {{table}}` prints the same.'''},
    {"code": '''hp = preset.hyperparameters()
hp[hp["method"] == "all"].drop(columns=["method", "fusion"]).set_index("parameter")'''},
    {"code": '''from mmbal.presets import DEFAULT_SOURCE

rows = hp[hp["method"] != "all"].assign(row=lambda d: d["method"].where(d["fusion"] == "all",
                                                                        d["method"] + " @ " + d["fusion"]))
own = rows["source"] != DEFAULT_SOURCE
print(f"{int(own.sum())} values of the rows come from a source; {int((~own).sum())} more are mmbal's defaults "
      "(the folded table below)")
rows[own].set_index(["row", "parameter"])[["value", "source"]]'''},
    {"code": '''# the balancer options each row leaves at mmbal's defaults
rows[~own].set_index(["row", "parameter"])[["value", "source"]]''', "tags": ["hide-output"]},
    {"md": "## The protocol\n\n{{protocol}}"},
    {"code": '''from booktools import reproduce_commands

split = preset.fold_option or "split"
folds = pd.DataFrame({"seed": preset.seeds, split: [preset.fold_of(s) if preset.folds else "{{single_split}}"
                                                    for s in preset.seeds]}).set_index("seed")
options = ", ".join(f"{k}={v}" for k, v in preset.data_options.items()) or "none"
print(f"data options of every run: {options}\\nthe data command: {reproduce_commands(TABLE)[0]}")
folds'''},
    {"md": "## A caveat: what MLB's settings do on this table\n\n{{caveat}}"},
    {"code": '''from booktools import mlb_k_table, plot_mlb_k

k_table = mlb_k_table(preset)
main = k_table.iloc[0]
print(f"MLB at {preset.fusion}: alpha {main['alpha']}, beta_max {main['beta_max']} -> {main['verdict']}")
assert main["verdict"].startswith("{{k_verdict}}"), "the prose above describes another k"
fig = plot_mlb_k(k_table)
k_table'''},
    {"md": '''## The exact commands and their cost

Prepare the dataset once (chapter 2 explains each step), then run the sweep on one GPU or split it
over several with `--shard i/n`; the sweep writes one JSON per run, skips finished runs when restarted, and
`python -m mmbal table summary` aggregates the JSONs into the CSV this page renders. {{commands_note}}'''},
    {"code": '''print("# one GPU")
print("\\n".join(reproduce_commands(TABLE)))
print("\\n# two GPUs")
print("\\n".join(c for c in reproduce_commands(TABLE, shards=2) if "data_scripts" not in c))'''},
    {"md": '''The cost in training steps follows from the preset alone: steps per epoch at its batch size, times the
epochs a run can take (at the soonest, the early-stopping patience plus one; at most, the epoch cap),
times its runs. The regimes train more than one model (Uni-Pre two encoders and then the fusion, the
ensemble two models), so their rows count at least this. Seconds per step depend on the GPU:
`python -m mmbal table estimate {{table}} --device cuda` times a few steps of every cell on random tensors of
the table's shapes and prints the device-hours.'''},
    {"code": '''from booktools import table_cost

cost = table_cost(preset)
print(f"{cost['runs'].sum()} runs, {cost['steps, fewest'].sum() / 1e6:.1f} to "
      f"{cost['steps, most'].sum() / 1e6:.1f} million training steps in all")
cost'''},
    {"md": '''## Running the table (full mode)

With `MMBAL_FAST=0` the cell below trains: the whole grid, or the subset named in the parameters cell
(`METHODS=["joint", "mlb"]`, `EPOCHS=1` on a small fabricated cache is a quick end-to-end check), into
`RESULTS`, then writes the summary CSV there; the next section shows it. In FAST mode it trains nothing.'''},
    {"code": '''from mmbal.sweep import sweep
from mmbal.tables import write_summary
from mmbal.train import set_threads

if FAST:
    print(f"FAST: no {TABLE} training; the table below reads {RESULTS}/{TABLE}/summary.csv if it exists")
else:
    set_threads(None, DEVICE)        # as the CLI: one torch thread per CPU run
    outcome = sweep(TABLE, RESULTS, methods=METHODS, fusions=FUSIONS, seeds=SEEDS, epochs=EPOCHS,
                    device=DEVICE, data_root=DATA_ROOT)
    assert not outcome["failed"], f"failed runs: {outcome['failed']}"
    written, _ = write_summary(TABLE, RESULTS)
    print(f"{len(outcome['done'])} runs done, {len(outcome['skipped'])} already finished; summary: {written}")'''},
    {"md": '''## This book's numbers beside the reference numbers

The reference column holds **reference numbers**, not this book's: the re-run of MLB and the baselines by
the same authors in the journal follow-up {cite:p}`kontras2025mcr` (Table 1), the only complete table with
MLB's numbers that could be read (the BMVC tables of {cite:t}`kontras2024mlb` are images). They follow the
authors' newer protocol, so they are a yardstick, not a target to hit to the decimal. The "this book"
columns come from `results/{{table}}/summary.csv`, written by `python -m mmbal table summary` from the run
JSONs; a cell without results says "not yet run".'''},
    {"code": '''from booktools import provenance
from mmbal.presets import REFERENCE_SOURCE
from mmbal.tables import NOT_RUN, paper_table, read_summary, summary_path

committed = summary_path(RESULTS, TABLE).exists()
summary = read_summary(summary_path(RESULTS, TABLE)) if committed else pd.DataFrame()
print(REFERENCE_SOURCE)
print(f"this book: {len(summary)} (method, fusion) cells with results" if committed
      else f"this book: {NOT_RUN} (no results for {TABLE} under {RESULTS})")
paper_table(summary, TABLE)'''},
    {"code": '''provenance(summary) if committed else f"{NOT_RUN}: no provenance to show"'''},
    {"when": "teach_std", "md": '''## From scratch: mean ± std over three runs

Each cell is the mean ± standard deviation of three runs (three folds or splits, each with its seed).
The official result script uses `np.std`, the *population* standard deviation (divide by n, not n − 1);
with three runs the two differ noticeably (the cell below prints both), which matters whenever a gap
between rows is compared with the std. Here it is in plain numpy on three made-up accuracies.'''},
    {"when": "teach_std", "code": '''import numpy as np

accs = {109: 0.62, 19: 0.70, 337: 0.75}           # made-up inputs for the check
x = np.array(list(accs.values()))
mean = x.sum() / len(x)
std = np.sqrt(((x - mean) ** 2).sum() / len(x))   # population std: divide by n
sample_std = np.sqrt(((x - mean) ** 2).sum() / (len(x) - 1))

assert abs(mean - (0.62 + 0.70 + 0.75) / 3) < 1e-12
assert abs(std - np.sqrt((0.07 ** 2 + 0.01 ** 2 + 0.06 ** 2) / 3)) < 1e-12
assert abs(std / sample_std - np.sqrt(2 / 3)) < 1e-12
print(f"{100 * mean:.1f} ± {100 * std:.1f} (population std); the sample std would say ± {100 * sample_std:.1f}")'''},
    {"when": "teach_std",
     "md": '''`mmbal.tables` does the same from result JSONs: `load_runs` reads one row per run, `summarize` groups
by (method, fusion) and aggregates every metric of every head. Written as result files and read back,
the three made-up runs must give exactly the numbers above.'''},
    {"when": "teach_std", "code": '''import tempfile

from mmbal.experiments import write_json
from mmbal.tables import load_runs, summarize


def made_up_record(seed, acc):
    heads = {h: {"accuracy": acc, "macro_f1": acc, "ece": 0.0} for h in ("mm", "audio", "video")}
    return {"config": {"data": {"name": preset.dataset, "options": {}}, "model": {"fusion": preset.fusion},
                       "seed": seed}, "environment": {},
            "cell": {"table": TABLE, "method": "mlb", "fusion": preset.fusion, "seed": seed, "fast": True},
            "history": [], "seconds": 0.0, "val": heads, "test": heads}


with tempfile.TemporaryDirectory() as tmp:
    for seed, acc in accs.items():
        write_json(made_up_record(seed, acc), f"{tmp}/{TABLE}/runs/mlb__{preset.fusion}__seed{seed}.json")
    check = summarize(load_runs(tmp, TABLE), TABLE)

torch.testing.assert_close(torch.tensor([check["test_accuracy_mean"][0], check["test_accuracy_std"][0]]),
                           torch.tensor([mean, std]), check_dtype=False)
check[["method", "fusion", "n", "seeds", "test_accuracy_mean", "test_accuracy_std"]]'''},
    {"md": '''## Try it: this table's MLB settings on Digits-AV

{{try_note}}

Both runs train the small CNNs of chapter 8e on the embedded Digits-AV data (so they run on a CPU) with
MLB at this table's `alpha` and `beta_max`, once as the table sets them and once uncapped (no `beta_max`,
the BMVC-era form; where the table is already uncapped, with `alpha: 0.5` instead); everything else is
Digits-AV's recipe, for `TRY_EPOCHS` epochs. The trace shows the k that MLB applied at each step to the
modality that lagged at that step, and the cell checks it against the caveat above. The accuracies of so
short a run are a smoke test, not results.'''},
    {"code": '''from dataclasses import replace

import numpy as np

from booktools import mlb_k
from mmbal.experiments import run

digits = get_preset("digits_av")
table_mlb = {k: v for k, v in preset.method("mlb").options.items() if k in ("alpha", "beta_max")}
set_threads(None, DEVICE)
traces = {}
other = (("uncapped", {**table_mlb, "beta_max": None}) if table_mlb.get("beta_max") is not None
         else ("alpha 0.5", {"alpha": 0.5, "beta_max": None}))      # an uncapped table: the paper's gentler alpha
for name, options in (("this table", table_mlb), other):
    cfg = digits.run_config("mlb", "concat", fast=True, epochs=TRY_EPOCHS, device=DEVICE)
    cfg = replace(cfg, balancer=replace(cfg.balancer, options={**cfg.balancer.options, **options}))
    record = run(cfg).record
    trace = {k: np.asarray(v) for k, v in record["trace"].items()}
    lagging = np.where(trace["ratio/audio"] > 1, trace["coeff/audio"], trace["coeff/video"])   # (steps,)
    leading = np.where(trace["ratio/audio"] > 1, trace["coeff/video"], trace["coeff/audio"])   # (steps,)
    traces[name] = lagging
    print(f"{name:10s} alpha {options['alpha']}, beta_max {options['beta_max']}: k of the lagging modality "
          f"{lagging.min():.3f} to {lagging.max():.3f}, of the leading one {leading.min():.3f} to {leading.max():.3f}; "
          f"test accuracy {100 * record['test']['mm']['accuracy']:.1f} % after {TRY_EPOCHS} epochs")
bound = float(mlb_k([1e6], table_mlb["alpha"], table_mlb["beta_max"])[0])     # k as r grows without bound
assert traces["this table"].max() <= max(bound, 1.0) + 1e-4, "k above the caveat's bound"

import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6.5, 3))
for name, k in traces.items():
    ax.plot(k, label=name)
ax.axhline(1.0, color="grey", lw=0.8, ls=":")
ax.set_xlabel("training step (as stored in the trace)")
ax.set_ylabel("k of the lagging modality")
ax.legend()
fig.tight_layout()'''},
    {"md": "## Summary\n\n{{summary}}\n\n## Exercises\n\n{{exercises}}"},
]


def _text(value) -> str:
    """A content value as markdown: a list becomes a bullet list (of strings: quote a YAML item holding ': ')."""
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise ValueError(f"a list item is not text (YAML read 'a: b' as a mapping): {value}")
    return "\n".join(f"- {v}" for v in value) if isinstance(value, list) else str(value).strip("\n")


def _exercises(items: list[dict]) -> str:
    """Numbered questions, each followed by its solution in a collapsed admonition."""
    return "\n\n".join(f"{i}. {e['q'].strip()}\n\n:::{{admonition}} Solution\n:class: dropdown\n{e['a'].strip()}\n:::"
                       for i, e in enumerate(items, 1))


def _cell(kind: str, source: str, tags, cell_id: str) -> dict:
    lines = source.splitlines(keepends=True)
    meta = {"tags": list(tags)} if tags else {}
    if kind == "md":
        return {"cell_type": "markdown", "id": cell_id, "metadata": meta, "source": lines}
    return {"cell_type": "code", "execution_count": None, "id": cell_id, "metadata": meta, "outputs": [],
            "source": lines}


def render(stem: str, spec: dict, url: str, ref: str) -> str:
    """The notebook text of one chapter."""
    fields = {k: _text(v) for k, v in spec.items()
              if isinstance(v, (str, list)) and k not in ("exercises", "extra_cells")}
    fields.update(badge=badge_line(ROOT / "book" / f"{stem}.ipynb", url, ref), bootstrap=bootstrap_source(url, ref),
                  exercises=_exercises(spec["exercises"]))
    cells = []
    for entry in TEMPLATE:
        if "when" in entry and not spec.get(entry["when"]):
            continue
        parts = spec.get(entry["insert"], []) if "insert" in entry else [entry]
        for part in parts:
            kind = "md" if "md" in part else "code"
            source = FIELD.sub(lambda m: fields[m.group(1)], part[kind]) if part is entry else part[kind].strip("\n")
            cells.append((kind, source, part.get("tags")))
    ids = [hashlib.sha1(f"{stem}/{i}".encode()).hexdigest()[:8] for i in range(len(cells))]
    nb = {"cells": [_cell(k, s, t, i) for (k, s, t), i in zip(cells, ids)],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def chapters() -> dict[str, str]:
    """Chapter stem -> the notebook text the template gives it."""
    url, ref = pinned()
    content = yaml.safe_load(CONTENT.read_text(encoding="utf-8"))
    return {stem: render(stem, spec, url, ref) for stem, spec in content.items()}


if __name__ == "__main__":
    write = "--write" in sys.argv[1:]
    stale = []
    for stem, text in chapters().items():
        path = ROOT / "book" / f"{stem}.ipynb"
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(stem)
        if write:
            path.write_text(text, encoding="utf-8")
    print(("rewrote: " if write else "differ from the template: ") + ", ".join(stale) if stale
          else "chapters 8a-8d equal the template")
    sys.exit(1 if stale and not write else 0)
