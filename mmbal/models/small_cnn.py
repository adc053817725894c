"""Small GroupNorm CNN encoders sized for Digits-AV (spectrograms ~64x30, frames ~16x16); joint
training on Digits-AV was unstable with BatchNorm."""
from torch import nn

from mmbal.models.base import ENCODERS, GridEncoder


def _backbone(in_channels: int, width: int, out_dim: int) -> nn.Sequential:
    """Three blocks 3x3 conv -> GroupNorm -> ReLU, the first two max-pooled: (N, C, H, W) -> (N, D, H/4, W/4)."""
    def block(c_in: int, c_out: int, *pool: nn.Module) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(min(8, c_out), c_out),
                             nn.ReLU(inplace=True), *pool)
    return nn.Sequential(block(in_channels, width, nn.MaxPool2d(2)), block(width, 2 * width, nn.MaxPool2d(2)),
                         block(2 * width, out_dim))


@ENCODERS.register("small_cnn")
class SmallCNN(GridEncoder):
    """Small GroupNorm CNNs sized for Digits-AV (audio spectrogram / per-frame video)."""

    def __init__(self, modality: str, input_shape, *, width: int = 16, out_dim: int = 64):
        super().__init__(modality, input_shape, "small_cnn")
        self.out_dim = out_dim
        self.trunk = _backbone(input_shape[0], width, out_dim)                 # (N, C, H, W) -> (N, D, H/4, W/4)
