"""The multimodal model: ``encoders[m](x_m) -> tokens (B, L, D) -> z_m (B, D)``; ``logits["mm"] = fusion(z)``
and ``logits[m] = heads[m](z_m)``, the unimodal heads of the multi-loss objective (paper §3.2)."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from mmbal.models.base import Encoder, Fusion

ROLES = ("encoder", "head", "fusion")


class MultimodalModel(nn.Module):
    """Encoders, unimodal linear heads and a fusion, all keyed by modality name."""

    def __init__(self, encoders: dict[str, Encoder], fusion: Fusion, num_classes: int):
        super().__init__()
        if set(encoders) != set(fusion.modalities):
            raise ValueError(f"fusion modalities {fusion.modalities} differ from encoders {list(encoders)}")
        self.modalities = tuple(fusion.modalities)
        self.num_classes = num_classes
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.heads = nn.ModuleDict({m: nn.Linear(encoders[m].out_dim, num_classes) for m in self.modalities})
        self.fusion = fusion
        # When True, the unimodal heads see detached features: they become linear probes that
        # measure each encoder without training it (used by the ``joint`` objective).
        self.detach_heads = False

    def encode(self, inputs: dict[str, torch.Tensor]):
        """Tokens (B, L, D) and pooled features (B, D) of every modality."""
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise KeyError(f"batch lacks modalities {missing}; it has {sorted(inputs)}")
        tokens = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        features = {m: t.mean(dim=1) for m, t in tokens.items()}     # (B, L, D) -> (B, D)
        return tokens, features

    def heads_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.heads[m](z.detach() if self.detach_heads else z)
                for m, z in features.items()}                          # (B, D) -> (B, C)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict:
        tokens, features = self.encode(inputs)
        logits = {"mm": self.fusion(features, tokens if self.fusion.uses_tokens else None)}
        logits.update(self.heads_logits(features))
        return {"logits": logits, "features": features, "tokens": tokens if self.fusion.uses_tokens else None}

    # -- parameter ownership -------------------------------------------------------------
    def role_modules(self, modality: str) -> dict[str, nn.Module | None]:
        """The modules that belong to one modality, by role."""
        return {"encoder": self.encoders[modality], "head": self.heads[modality],
                "fusion": self.fusion.parts[modality] if modality in self.fusion.parts else None}

    def parameter_groups(self) -> "OrderedDict[str, list[nn.Parameter]]":
        """Every parameter in exactly one group: ``"<role>:<modality>"`` or ``"fusion:shared"``."""
        groups: OrderedDict[str, list[nn.Parameter]] = OrderedDict()
        for m in self.modalities:
            for role, module in self.role_modules(m).items():
                groups[f"{role}:{m}"] = list(module.parameters()) if module is not None else []
        groups["fusion:shared"] = self.fusion.shared_parameters()
        return groups

    def modality_params(self, roles=ROLES) -> dict[str, list[nn.Parameter]]:
        """Modality -> its parameters in the given roles (encoder m, head m, fusion part m)."""
        groups = self.parameter_groups()
        return {m: [p for r in roles for p in groups[f"{r}:{m}"]] for m in self.modalities}
