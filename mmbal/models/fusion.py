"""Late fusion heads (more in the fusion chapter)."""
from __future__ import annotations

import torch
from torch import nn

from mmbal.models.base import Fusion


class ConcatFusion(Fusion):
    """Late linear fusion: logits = W [z_1; ...; z_M] + b = sum_m W_m z_m + b.

    Stored as one bias-free linear map per modality (``parts[m]``) plus a shared bias, which is
    the same function as one Linear over the concatenation, split so each modality's block
    W_m can be reached (paper §3.4: MLB scales W_m with its modality, not the shared bias).
    """

    max_modalities = None

    def __init__(self, modalities, dims, num_classes):
        super().__init__(modalities, dims, num_classes)
        for m in self.modalities:
            self.parts[m] = nn.Linear(dims[m], num_classes, bias=False)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def fuse(self, features, tokens=None):
        return sum(self.parts[m](features[m]) for m in self.modalities) + self.bias  # (B, C)

    def unimodal_logits(self, features, tokens=None):
        """OGM's split: W_m z_m + b / M for each modality."""
        share = self.bias / len(self.modalities)
        return {m: self.parts[m](features[m]) + share for m in self.modalities}
