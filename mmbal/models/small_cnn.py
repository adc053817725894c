"""Small CNN encoders sized for Digits-AV (spectrograms ~64x30, frames ~16x16): GroupNorm by default (joint
training on Digits-AV was unstable with BatchNorm); ``norm="batch"`` for MMCosine (bench/mmcosine_collapse.py)."""
import torch
import torch.nn.functional as F
from torch import nn

from mmbal.models.base import ENCODERS, GridEncoder


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` (2x2 windows, stride 2, odd last row / column dropped), faster where nothing is trained.

    Under autograd it is PyTorch's kernel, whose backward sends each window's gradient to its first maximum. Without
    autograd (evaluation, feature extraction) it takes the elementwise maximum of the four strided views of the
    windows: the same values, several times faster on a CPU thread than the kernel on Digits-AV's shapes
    (bench/digits_av_speed.py --pool).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:            # (N, C, H, W) -> (N, C, H // 2, W // 2)
        if torch.is_grad_enabled() and x.requires_grad:
            return F.max_pool2d(x, 2)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        top, bottom = x[..., 0:h:2, :w], x[..., 1:h:2, :w]           # (N, C, H // 2, 2 * (W // 2)) each
        return torch.maximum(torch.maximum(top[..., 0::2], top[..., 1::2]),
                             torch.maximum(bottom[..., 0::2], bottom[..., 1::2]))


def _backbone(in_channels: int, width: int, out_dim: int, norm: str = "group") -> nn.Sequential:
    """Three blocks 3x3 conv -> GroupNorm | BatchNorm -> ReLU, two max-pooled: (N, C, H, W) -> (N, D, H/4, W/4)."""
    if norm not in ("group", "batch"):
        raise ValueError(f"small_cnn: norm must be 'group' or 'batch', got {norm!r}")

    def block(c_in: int, c_out: int, *pool: nn.Module) -> nn.Sequential:
        layer = nn.GroupNorm(min(8, c_out), c_out) if norm == "group" else nn.BatchNorm2d(c_out)
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), layer,
                             nn.ReLU(inplace=True), *pool)
    return nn.Sequential(block(in_channels, width, MaxPool2x2()), block(width, 2 * width, MaxPool2x2()),
                         block(2 * width, out_dim))


@ENCODERS.register("small_cnn")
class SmallCNN(GridEncoder):
    """Small CNNs sized for Digits-AV (audio spectrogram / per-frame video); ``norm``: group or batch."""

    def __init__(self, modality: str, input_shape, *, width: int = 16, out_dim: int = 64, norm: str = "group"):
        super().__init__(modality, input_shape, "small_cnn")
        self.out_dim = out_dim
        self.trunk = _backbone(input_shape[0], width, out_dim, norm)                # (N, C, H, W) -> (N, D, H/4, W/4)
