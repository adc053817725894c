"""Small CNN encoders sized for Digits-AV (spectrograms ~64x30, frames ~16x16): GroupNorm by default (joint
training on Digits-AV was unstable with BatchNorm); ``norm="batch"`` for MMCosine (bench/mmcosine_collapse.py)."""
from torch import nn

from mmbal.models.base import ENCODERS, GridEncoder


def _backbone(in_channels: int, width: int, out_dim: int, norm: str = "group") -> nn.Sequential:
    """Three blocks 3x3 conv -> GroupNorm | BatchNorm -> ReLU, two max-pooled: (N, C, H, W) -> (N, D, H/4, W/4)."""
    if norm not in ("group", "batch"):
        raise ValueError(f"small_cnn: norm must be 'group' or 'batch', got {norm!r}")

    def block(c_in: int, c_out: int, *pool: nn.Module) -> nn.Sequential:
        layer = nn.GroupNorm(min(8, c_out), c_out) if norm == "group" else nn.BatchNorm2d(c_out)
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), layer,
                             nn.ReLU(inplace=True), *pool)
    return nn.Sequential(block(in_channels, width, nn.MaxPool2d(2)), block(width, 2 * width, nn.MaxPool2d(2)),
                         block(2 * width, out_dim))


@ENCODERS.register("small_cnn")
class SmallCNN(GridEncoder):
    """Small CNNs sized for Digits-AV (audio spectrogram / per-frame video); ``norm``: group or batch."""

    def __init__(self, modality: str, input_shape, *, width: int = 16, out_dim: int = 64, norm: str = "group"):
        super().__init__(modality, input_shape, "small_cnn")
        self.out_dim = out_dim
        self.trunk = _backbone(input_shape[0], width, out_dim, norm)                # (N, C, H, W) -> (N, D, H/4, W/4)
