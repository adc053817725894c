"""Models of the unimodal training regimes: one modality's encoder and head, and their ensemble."""
import torch
from torch import nn

from mmbal.models.base import Encoder
from mmbal.models.multimodal import MultimodalModel


class UnimodalModel(nn.Module):
    """Encoder + linear head of one modality, with the MultimodalModel interface the trainer uses;
    its head is also the "fused" prediction (there is no other head to report)."""
    encode = MultimodalModel.encode
    modality_params = MultimodalModel.modality_params

    def __init__(self, encoder: Encoder, modality: str, num_classes: int):
        super().__init__()
        self.modalities = (modality,)
        self.num_classes = num_classes
        self.encoders = nn.ModuleDict({modality: encoder})
        self.heads = nn.ModuleDict({modality: nn.Linear(encoder.out_dim, num_classes)})
        self.detach_heads = False

    def forward(self, inputs: dict) -> dict:
        (m,) = self.modalities
        _, features = self.encode(inputs)                      # (B, D)
        logits = self.heads[m](features[m])                    # (B, C)
        return {"logits": {"mm": logits, m: logits}, "features": features, "tokens": None}

    def parameter_groups(self) -> dict[str, list]:
        (m,) = self.modalities
        return {f"encoder:{m}": list(self.encoders[m].parameters()),
                f"head:{m}": list(self.heads[m].parameters()), f"fusion:{m}": [], "fusion:shared": []}


class EnsembleModel(nn.Module):
    """Averages the members' logits (or probabilities, returned as log-probabilities)."""

    def __init__(self, members: dict[str, UnimodalModel], combine: str = "logits"):
        super().__init__()
        self.members = nn.ModuleDict(members)
        self.modalities = tuple(members)
        self.combine = combine

    def forward(self, inputs: dict) -> dict:
        logits = {m: member(inputs)["logits"][m] for m, member in self.members.items()}   # (B, C) each
        stacked = torch.stack(list(logits.values()))                                      # (M, B, C)
        fused = stacked.mean(0) if self.combine == "logits" else \
            torch.log(torch.softmax(stacked.float(), -1).mean(0).clamp_min(1e-12))
        return {"logits": {"mm": fused, **logits}}
