"""Encoder and fusion interfaces, and their registries ``ENCODERS`` / ``FUSIONS``: an encoder maps one
modality to tokens (B, L, D), pooled by the model to z_m (B, D); a fusion maps every z_m (and tokens, if it
uses them) to logits (B, C) and keeps the modules that see modality m alone in ``parts[m]``."""
from typing import Sequence

import torch
from torch import nn

from mmbal.registry import Registry

ENCODERS = Registry("encoder")
FUSIONS = Registry("fusion")
Tensors = dict[str, torch.Tensor]   # modality -> tensor


class Encoder(nn.Module):
    """Base class: subclasses set ``out_dim`` and implement ``encode(x) -> (B, L, D)``."""
    out_dim: int

    def __init__(self, modality: str, input_shape: Sequence[int | None]):
        super().__init__()
        self.modality = modality
        self.input_shape = tuple(input_shape)  # per-sample shape; None = any size on that axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Check x against (B, *input_shape), failing with a message naming it, then encode it to (B, L, D)."""
        expected = self.input_shape
        if x.dim() != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, x.shape[1:])):
            shown = ", ".join("*" if e is None else str(e) for e in expected)
            raise ValueError(f"{type(self).__name__} for {self.modality!r} expects input of shape "
                             f"(B, {shown}), got {tuple(x.shape)}")
        return self.encode(x)


class GridEncoder(Encoder):
    """Base class of 2D-CNN encoders: ``trunk`` on a (C, F, T) spectrogram or on every frame of a (C, T, H, W)
    clip; its output cells are the tokens (B, L, D) (their mean is the global / 3D average pool)."""

    def __init__(self, modality: str, input_shape, family: str):
        if len(input_shape) not in (3, 4):
            raise ValueError(f"{family}: {modality!r} input must be (C, F, T) or (C, T, H, W), got {input_shape}")
        super().__init__(modality, (input_shape[0],) + (None,) * (len(input_shape) - 1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.trunk(x).flatten(2).transpose(1, 2)                 # (B, D, F', T') -> (B, F'*T', D)
        b, c, t, h, w = x.shape
        y = self.trunk(x.transpose(1, 2).reshape(b * t, c, h, w))           # (B*T, D, H', W')
        return y.flatten(2).transpose(1, 2).reshape(b, -1, y.shape[1])      # (B, T*H'*W', D)


class Fusion(nn.Module):
    """Base class of fusion heads, which implement ``fuse(features, tokens) -> (B, C)``: ``parts[m]`` (scaled
    with modality m by balancers), the rest shared; ``uses_tokens`` asks for token sequences too; ``late_linear``
    declares logits = sum_m parts[m](z_m) (+ bias) with ``parts[m]`` an ``nn.Linear(D_m, C)`` (MMCosine needs it)."""
    uses_tokens = False
    late_linear = False
    min_modalities = 2
    max_modalities: int | None = None

    def __init__(self, modalities: Sequence[str], dims: dict[str, int], num_classes: int):
        super().__init__()
        low, high, n = self.min_modalities, self.max_modalities, len(modalities)
        if not low <= n <= (high or n):
            expected = f"exactly {low}" if high == low else f"{low} or more" if high is None else f"{low} to {high}"
            raise ValueError(f"{type(self).__name__} fuses {expected} modalities, got {n}: {list(modalities)}")
        self.modalities = tuple(modalities)
        self.parts = nn.ModuleDict()

    def forward(self, features: Tensors, tokens: Tensors | None = None) -> torch.Tensor:
        return self.fuse(features, tokens)  # (B, C)

    def unimodal_logits(self, features: Tensors, tokens: Tensors | None = None) -> Tensors:
        """Each modality's share of the fused prediction (OGM): by default the fusion with every other
        modality's input set to zero; late linear fusions return the exact split of their linear layer."""
        def only(m, inputs):                # modality m's inputs, the others' set to zero
            return None if inputs is None else {k: v if k == m else torch.zeros_like(v) for k, v in inputs.items()}
        return {m: self.fuse(only(m, features), only(m, tokens)) for m in self.modalities}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the fusion that belong to no single modality."""
        own = {id(p) for p in self.parts.parameters()}
        return [p for p in self.parameters() if id(p) not in own]
