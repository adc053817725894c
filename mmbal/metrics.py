"""Classification metrics reported for every head: accuracy, macro-F1 and ECE (15 bins, L1)."""
from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def macro_f1(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN); absent classes count 0."""
    pred = logits.argmax(1)
    idx = labels * num_classes + pred
    confusion = torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)  # (C, C)
    tp = confusion.diag().float()
    fp = confusion.sum(0).float() - tp
    fn = confusion.sum(1).float() - tp
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    present = (confusion.sum(1) + confusion.sum(0)) > 0
    return f1[present].mean().item() if present.any() else 0.0


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of |bin| / N * |accuracy - mean confidence|."""
    probs = torch.softmax(logits.float(), dim=1)
    confidence, pred = probs.max(1)                               # (N,), (N,)
    correct = (pred == labels).float()
    bins = torch.clamp((confidence * n_bins).ceil().long() - 1, 0, n_bins - 1)  # (N,) bin ids
    count = torch.bincount(bins, minlength=n_bins).float()
    conf_sum = torch.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    return ((conf_sum - acc_sum).abs().sum() / len(labels)).item()


def head_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    return {"accuracy": accuracy(logits, labels),
            "macro_f1": macro_f1(logits, labels, num_classes),
            "ece": expected_calibration_error(logits, labels)}
