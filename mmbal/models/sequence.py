"""Conformer encoder for pre-extracted feature sequences (the MLB paper's CREMA-D Conformer: VAVL's encoders): wav2vec 2.0 (T, 1024) or
face-embedding (T, 1408) frames -> Conv1d(D_in, 50, k=1, no bias) -> Linear(50, 512) -> Dropout -> torchaudio
Conformer (5 blocks, d 512, 8 heads, FF 2048, kernel 31, dropout 0.1), attention along each clip's own frames.
All-zero frames are padding (Keras's ``Masking`` rule): attention ignores them as keys, and the returned tokens hold
the clip's mean over real frames there, so the model's mean over L is the masked mean. The official code permutes
its input to (T, B, D) for a Conformer that expects (B, T, D), so attention and the depthwise conv run across the
clips of a batch, unmasked; that is not copied here."""
import torch
from torch import nn
from torchaudio.models import Conformer

from mmbal.models.base import ENCODERS, Encoder


def frame_mask(x: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, T) bool, True at real frames; a clip with none keeps its first (no all-masked row)."""
    valid = x.abs().amax(dim=-1) > 0
    valid[:, 0] |= ~valid.any(dim=1)
    return valid


@ENCODERS.register("sequence_conformer")
class SequenceConformer(Encoder):
    """Conv1d projection + Conformer over a zero-padded (T, D_in) sequence; tokens (B, T, d)."""

    def __init__(self, modality: str, input_shape, *, d_model: int = 512, num_layers: int = 5, num_heads: int = 8,
                 ffn_dim: int = 2048, kernel_size: int = 31, dropout: float = 0.1, bottleneck: int = 50):
        if len(input_shape) != 2:
            raise ValueError(f"sequence_conformer: {modality!r} input must be (T, D) feature frames, got {input_shape}"
                             " (read CREMA-D with --data-opt inputs=features)")
        super().__init__(modality, (None, input_shape[1]))
        self.out_dim = d_model
        self.conv = nn.Conv1d(input_shape[1], bottleneck, kernel_size=1, bias=False)
        self.proj = nn.Sequential(nn.Linear(bottleneck, d_model), nn.Dropout(dropout))
        self.conformer = Conformer(input_dim=d_model, num_heads=num_heads, ffn_dim=ffn_dim, num_layers=num_layers,
                                   depthwise_conv_kernel_size=kernel_size, dropout=dropout)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        valid = frame_mask(x)                                               # (B, T)
        h = self.proj(self.conv(x.transpose(1, 2)).transpose(1, 2))        # (B, D_in, T) -> (B, 50, T) -> (B, T, d)
        h = h.transpose(0, 1)                                               # (T, B, d): torchaudio's layers
        for layer in self.conformer.conformer_layers:
            h = layer(h, ~valid)                                            # key padding mask (B, T)
        h, keep = h.transpose(0, 1), valid.unsqueeze(-1)                    # (B, T, d), (B, T, 1)
        mean = (h * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True)  # (B, 1, d) mean over real frames
        return torch.where(keep, h, mean)                                   # (B, T, d)
