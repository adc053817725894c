"""Classification metrics reported for every head: accuracy, macro-F1 and ECE (15 bins, L1)."""
from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def macro_f1(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN); absent classes count 0."""
    confusion = torch.bincount(labels * num_classes + logits.argmax(1),
                               minlength=num_classes ** 2).reshape(num_classes, num_classes)  # (C, C) true x pred
    denom = (confusion.sum(0) + confusion.sum(1)).float()            # (C,) = 2 TP + FP + FN
    present = denom > 0
    return (2 * confusion.diag().float() / denom)[present].mean().item() if present.any() else 0.0


def _confidence_bins(logits: torch.Tensor, labels: torch.Tensor, n_bins: int):
    """Equal-width bins of the top softmax probability: per bin (count, sum of confidence, hits)."""
    probs = torch.softmax(logits.float(), dim=1)                  # (N, C)
    confidence, pred = probs.max(1)                               # (N,), (N,)
    correct = (pred == labels).float()
    bins = torch.clamp((confidence * n_bins).ceil().long() - 1, 0, n_bins - 1)  # (N,) bin ids
    return (torch.bincount(bins, minlength=n_bins).float(),
            torch.bincount(bins, weights=confidence, minlength=n_bins),
            torch.bincount(bins, weights=correct, minlength=n_bins))


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of |bin| / N * |accuracy - mean confidence|."""
    _, conf_sum, acc_sum = _confidence_bins(logits, labels, n_bins)
    return ((conf_sum - acc_sum).abs().sum() / len(labels)).item()


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, list]:
    """The ECE bins, stored with a result: count, mean confidence and accuracy per bin."""
    count, conf_sum, acc_sum = _confidence_bins(logits, labels, n_bins)
    conf, acc = conf_sum / count.clamp_min(1), acc_sum / count.clamp_min(1)
    return {"count": [int(c) for c in count.tolist()], "confidence": [round(v, 6) for v in conf.tolist()],
            "accuracy": [round(v, 6) for v in acc.tolist()]}


def head_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    return {"accuracy": accuracy(logits, labels),
            "macro_f1": macro_f1(logits, labels, num_classes),
            "ece": expected_calibration_error(logits, labels)}
