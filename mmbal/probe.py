"""Linear probe: how much label information one modality's encoder holds after training.

The encoder is frozen; its pooled features (B, D) are extracted on the train and test splits and a
multinomial logistic regression (scikit-learn, L2, standardised features) is fitted on train. Its test
accuracy measures under-training independently of the head the model trained with: an encoder
that a dominant modality starved of gradient gives a weaker probe.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mmbal.train import Trained

def fit_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict[str, float]:
    """Train/test accuracy of a logistic-regression probe on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        raise ValueError("linear probe: the training features hold fewer than two classes")
    # C: inverse L2 strength (scikit-learn's default)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    probe.fit(train_x, train_y)
    return {"train_accuracy": float(probe.score(train_x, train_y)),
            "test_accuracy": float(probe.score(test_x, test_y))}


def linear_probe(trained: Trained, modalities) -> dict[str, Any]:
    """{modality: {"train_accuracy", "test_accuracy", "dim"}} for every modality asked for."""
    unknown = sorted(set(modalities) - set(trained.model.modalities))
    if unknown:
        raise ValueError(f"linear probe: unknown modalities {unknown}; the model has {list(trained.model.modalities)}")
    (train_x, train_y), (test_x, test_y) = (trained.predict(split, key="features") for split in ("train", "test"))
    return {m: {**fit_probe(train_x[m].numpy(), train_y.numpy(), test_x[m].numpy(), test_y.numpy()),
                "dim": int(train_x[m].shape[1])} for m in modalities}          # features: {modality: (N, D)}


def probe_encoders(trained: Trained, modalities) -> dict[str, Any]:
    """``linear_probe`` of each asked modality's encoder in any trained model a run returns: a multimodal model's
    encoders, the one encoder of a unimodal run (other modalities skipped), or each member of an ensemble on its
    own modality (the members' encoders are the ones trained alone)."""
    members = getattr(trained.model, "members", None)                  # the ensemble regime: {modality: model}
    if members is not None:
        return {m: linear_probe(Trained(member, trained.loaders, trained.device, member), [m])[m]
                for m, member in members.items() if m in modalities}
    if len(trained.model.modalities) == 1:                              # a unimodal run
        return linear_probe(trained, [m for m in modalities if m in trained.model.modalities])
    return linear_probe(trained, modalities)
