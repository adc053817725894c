"""Interfaces shared by every encoder and fusion module.

An encoder maps one modality's batch to a token sequence ``(B, L, D)``; the model pools it to a
feature ``z_m`` of shape ``(B, D)`` (global average pooling, as ResNet does). A fusion maps the
features (and, if it wants them, the tokens) of all modalities to fused logits ``(B, C)`` and
exposes its per-modality parts so that balancers can reach them.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Encoder(nn.Module):
    """Base class: subclasses set ``out_dim`` and implement ``encode(x) -> (B, L, D)``."""

    out_dim: int

    def __init__(self, modality: str, input_shape: Sequence[int | None]):
        super().__init__()
        self.modality = modality
        self.input_shape = tuple(input_shape)  # per-sample shape; None = any size on that axis

    def check_input(self, x: torch.Tensor) -> None:
        """Fail with a message naming the expected shape (B, *input_shape)."""
        expected = self.input_shape
        ok = x.dim() == len(expected) + 1 and all(
            e is None or e == s for e, s in zip(expected, x.shape[1:]))
        if not ok:
            shown = ", ".join("*" if e is None else str(e) for e in expected)
            raise ValueError(f"{type(self).__name__} for {self.modality!r} expects input of shape "
                             f"(B, {shown}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.encode(x)  # (B, L, D)


class Fusion(nn.Module):
    """Base class of fusion heads.

    ``parts[m]`` holds the modules that act on modality m alone (they are scaled with modality m
    by gradient-modulation balancers); every other parameter is shared. ``uses_tokens`` asks the
    model to pass token sequences as well as pooled features.
    """

    uses_tokens = False
    min_modalities = 2
    max_modalities: int | None = None

    def __init__(self, modalities: Sequence[str], dims: dict[str, int], num_classes: int):
        super().__init__()
        n = len(modalities)
        if n < self.min_modalities or (self.max_modalities is not None and n > self.max_modalities):
            if self.max_modalities == self.min_modalities:
                expected = f"exactly {self.min_modalities}"
            elif self.max_modalities is None:
                expected = f"{self.min_modalities} or more"
            else:
                expected = f"{self.min_modalities} to {self.max_modalities}"
            raise ValueError(f"{type(self).__name__} fuses {expected} modalities, "
                             f"got {n}: {list(modalities)}")
        self.modalities = tuple(modalities)
        self.dims = dict(dims)
        self.num_classes = num_classes
        self.parts = nn.ModuleDict()

    def fuse(self, features: dict[str, torch.Tensor],
             tokens: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: dict[str, torch.Tensor],
                tokens: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.fuse(features, tokens)  # (B, C)

    def unimodal_logits(self, features: dict[str, torch.Tensor],
                        tokens: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Each modality's share of the fused prediction (used by OGM / OGM-GE).

        Default: the fused head applied with every other modality's input set to zero.
        Late linear fusions override this with the exact split of their linear layer.
        """
        out = {}
        for m in self.modalities:
            feats = {k: v if k == m else torch.zeros_like(v) for k, v in features.items()}
            toks = None if tokens is None else {
                k: v if k == m else torch.zeros_like(v) for k, v in tokens.items()}
            out[m] = self.fuse(feats, toks)
        return out

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the fusion that belong to no single modality."""
        own = {id(p) for p in self.parts.parameters()}
        return [p for p in self.parameters() if id(p) not in own]
