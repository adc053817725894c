"""Conformer encoders (the MLB paper's CREMA-D backbone) on torchaudio's Conformer, attending along time within each sample (the
official code attends across the batch). frontend -> (B, T, D_in) -> Linear(D_in, 50) -> Linear(50, d) ->
Dropout -> Conformer (5 blocks, d 512, 8 heads, FF 2048, kernel 31, dropout 0.1) -> tokens (B, T, d)."""
import torch
from torch import nn
from torchaudio.models import Conformer

from mmbal.models.base import ENCODERS, Encoder
from mmbal.models.small_cnn import _backbone

RANKS = {"features": 2, "spectrogram": 3, "frames": 4}   # input kind -> rank of its per-sample shape


class SpectrogramFrames(nn.Module):
    """(B, C, F, T) spectrogram / fbank -> (B, T, C*F): each time frame is one feature vector."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        return x.permute(0, 3, 1, 2).reshape(b, t, c * f)      # (B, C, F, T) -> (B, T, C*F)


class FrameFeatures(nn.Module):
    """(B, C, T, H, W) clip -> (B, T, D): a small 2D CNN on every frame, averaged over space."""

    def __init__(self, channels: int, *, width: int = 16, out_dim: int = 64):
        super().__init__()
        self.net = _backbone(channels, width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.net(x.transpose(1, 2).reshape(b * t, c, h, w)).mean(dim=(2, 3))   # (B*T, C, H, W) -> (B*T, D)
        return y.reshape(b, t, -1)                                                 # (B, T, D)


@ENCODERS.register("conformer")
class ConformerEncoder(Encoder):
    """torchaudio Conformer (5 x 512, 8 heads) over spectrogram frames, per-frame CNN or precomputed features.
    Pretrained extractors (wav2vec2 (T, 1024), face (T, 1408)) plug in as precomputed (T, D_in) inputs or as
    ``frontend`` (raw batch -> (B, T, D_in)) with ``frontend_dim``; ``use_group_norm`` makes samples independent."""

    def __init__(self, modality: str, input_shape, *, input_kind: str = "auto",
                 frontend: nn.Module | None = None, frontend_dim: int | None = None,
                 d_model: int = 512, num_layers: int = 5, num_heads: int = 8, ffn_dim: int = 2048,
                 kernel_size: int = 31, dropout: float = 0.1, bottleneck: int | None = 50,
                 frame_width: int = 16, frame_dim: int = 64, use_group_norm: bool = False):
        input_shape = tuple(input_shape)
        kind = {r: k for k, r in RANKS.items()}.get(len(input_shape)) if input_kind == "auto" else input_kind
        if frontend is not None:
            if frontend_dim is None:
                raise ValueError("conformer: a custom frontend needs frontend_dim (its feature size D_in)")
            expected, in_dim = input_shape, frontend_dim
        elif RANKS.get(kind) != len(input_shape):
            raise ValueError(f"conformer: input_kind {input_kind!r} (one of auto, {', '.join(RANKS)}) does not fit the "
                             f"per-sample shape {input_shape}: (T, D_in) features, (C, F, T) spectrogram or "
                             "(C, T, H, W) frames")
        elif kind == "features":              # precomputed (T, D_in), e.g. wav2vec2 / face features
            expected, in_dim, frontend = (None, input_shape[1]), input_shape[1], nn.Identity()
        elif kind == "spectrogram":           # (C, F, T): T frames of C*F features
            c, f = input_shape[:2]
            expected, in_dim, frontend = (c, f, None), c * f, SpectrogramFrames()
        else:                                 # (C, T, H, W): per-frame CNN features
            expected, in_dim = (input_shape[0], None, None, None), frame_dim
            frontend = FrameFeatures(input_shape[0], width=frame_width, out_dim=frame_dim)
        super().__init__(modality, expected)
        if d_model % num_heads:
            raise ValueError(f"conformer: d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.out_dim, self.in_dim, self.frontend = d_model, in_dim, frontend
        proj: list[nn.Module] = ([nn.Linear(in_dim, bottleneck, bias=False), nn.Linear(bottleneck, d_model)]
                                 if bottleneck else [nn.Linear(in_dim, d_model)])
        self.proj = nn.Sequential(*proj, nn.Dropout(dropout))
        self.conformer = Conformer(input_dim=d_model, num_heads=num_heads, ffn_dim=ffn_dim,
                                   num_layers=num_layers, depthwise_conv_kernel_size=kernel_size,
                                   dropout=dropout, use_group_norm=use_group_norm)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.frontend(x)                                   # (B, T, D_in)
        if feats.dim() != 3 or feats.shape[-1] != self.in_dim:
            raise ValueError(f"conformer frontend must return (B, T, {self.in_dim}), got {tuple(feats.shape)}")
        h = self.proj(feats)                                       # (B, T, d)
        lengths = torch.full((h.shape[0],), h.shape[1], dtype=torch.long, device=h.device)
        return self.conformer(h, lengths)[0]                       # (B, T, d), attention along T
