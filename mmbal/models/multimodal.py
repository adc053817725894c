"""The multimodal model: ``encoders[m](x_m) -> tokens (B, L, D) -> z_m (B, D)``; ``logits["mm"] = fusion(z)``
and ``logits[m] = heads[m](z_m)``, the unimodal heads of the multi-loss objective (Kontras et al., BMVC 2024)."""
import torch
from torch import nn

from mmbal.models.base import Encoder, Fusion, Tensors

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
        self.detach_heads = False   # True: the heads see detached features, probes that do not train the encoders

    def encode(self, inputs: Tensors) -> tuple[Tensors, Tensors]:
        """Tokens (B, L, D) and pooled features (B, D) of every modality."""
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise KeyError(f"batch lacks modalities {missing}; it has {sorted(inputs)}")
        tokens = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        return tokens, {m: t.mean(dim=1) for m, t in tokens.items()}     # (B, L, D) -> (B, D)

    def heads_logits(self, features: Tensors) -> Tensors:
        return {m: self.heads[m](z.detach() if self.detach_heads else z) for m, z in features.items()}  # (B, C)

    def forward(self, inputs: Tensors) -> dict:
        tokens, features = self.encode(inputs)
        tokens = tokens if self.fusion.uses_tokens else None
        logits = {"mm": self.fusion(features, tokens)} | self.heads_logits(features)
        return {"logits": logits, "features": features, "tokens": tokens}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter in exactly one group: ``"<role>:<modality>"`` or ``"fusion:shared"``."""
        groups = {}
        for m in self.modalities:
            part = self.fusion.parts[m] if m in self.fusion.parts else None
            for role, module in zip(ROLES, (self.encoders[m], self.heads[m], part)):
                groups[f"{role}:{m}"] = [] if module is None else list(module.parameters())
        return groups | {"fusion:shared": self.fusion.shared_parameters()}

    def modality_params(self, roles=ROLES) -> dict[str, list[nn.Parameter]]:
        """Modality -> its parameters in the given roles (encoder m, head m, fusion part m)."""
        groups = self.parameter_groups()
        return {m: [p for r in roles for p in groups[f"{r}:{m}"]] for m in self.modalities}
