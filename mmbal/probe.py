"""Linear probe: how much label information one modality's encoder holds after training.

The encoder is frozen; its pooled features (B, D) are extracted on the train and test splits and a
multinomial logistic regression (scikit-learn, L2, standardised features) is fitted on train. Its test
accuracy measures under-training independently of the head the model trained with: an encoder
that a dominant modality starved of gradient gives a weaker probe.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

PROBE_C = 1.0             # inverse L2 strength of the logistic regression (scikit-learn default)
PROBE_MAX_ITER = 2000


@torch.no_grad()
def encoder_features(model, loader, modality: str, device) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N, D) of one modality's encoder over a loader, and the labels (N,)."""
    from mmbal.train import to_device

    was_training = model.training
    model.eval()
    feats, labels = [], []
    for batch in loader:
        batch = to_device(batch, device)
        _, features = model.encode(batch)                        # {modality: (B, D)}
        feats.append(features[modality].float().cpu())
        labels.append(batch["label"].cpu())
    model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict[str, float]:
    """Train/test accuracy of a logistic-regression probe on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        raise ValueError("linear probe: the training features hold fewer than two classes")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER))
    probe.fit(train_x, train_y)
    return {"train_accuracy": float(probe.score(train_x, train_y)),
            "test_accuracy": float(probe.score(test_x, test_y))}


def linear_probe(model, train_loader, test_loader, modalities, device) -> dict[str, Any]:
    """{modality: {"train_accuracy", "test_accuracy", "dim"}} for every modality asked for."""
    out = {}
    for m in modalities:
        if m not in model.modalities:
            raise ValueError(f"linear probe: unknown modality {m!r}; the model has {list(model.modalities)}")
        train_x, train_y = encoder_features(model, train_loader, m, device)
        test_x, test_y = encoder_features(model, test_loader, m, device)
        out[m] = {**fit_probe(train_x, train_y, test_x, test_y), "dim": int(train_x.shape[1])}
    return out
