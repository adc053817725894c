"""Plot helpers for the book: each returns a matplotlib Figure (nothing is shown or saved here)."""
from __future__ import annotations

import numpy as np
import matplotlib.pyplot as plt

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


def plot_trace(trace: dict[str, list], prefix: str = "coeff/", *, smooth: int = 1, ax=None,
               reference: float | None = 1.0, title: str | None = None):
    """Per-step trace curves whose names start with ``prefix`` (e.g. ``coeff/audio``)."""
    fig, ax = plt.subplots(figsize=(6, 3.2)) if ax is None else (ax.figure, ax)
    steps = trace.get("step", range(len(next(iter(trace.values())))))
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
