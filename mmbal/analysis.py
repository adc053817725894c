"""Analysis of committed runs: time-averaged balancing coefficients and the fixed-k control.

MLB's coefficient k_m (paper Eq. 4-5) changes every step; its time-average over training is the
constant a "fixed-k" control applies, so that comparing MLB with fixed-k separates *adaptive*
balancing from *a constant larger step* for the slow modality (chapter 10).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd


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
