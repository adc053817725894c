"""Small GroupNorm CNN encoders sized for Digits-AV (spectrograms ~64x30, frames ~16x16); joint
training on Digits-AV was unstable with BatchNorm."""
from __future__ import annotations

import torch
from torch import nn

from mmbal.models.base import ENCODERS, Encoder, grid_input_shape, grid_tokens


def _conv_block(c_in: int, c_out: int, *, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                               nn.GroupNorm(min(8, c_out), c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _backbone(in_channels: int, width: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(_conv_block(in_channels, width, pool=True),
                         _conv_block(width, 2 * width, pool=True),
                         _conv_block(2 * width, out_dim, pool=False))


@ENCODERS.register("small_cnn")
class SmallCNN(Encoder):
    """Small GroupNorm CNNs sized for Digits-AV (audio spectrogram / per-frame video).
    Three conv blocks over a (C, F, T) spectrogram or every frame of a (C, T, H, W) clip; tokens: the final cells."""

    def __init__(self, modality: str, input_shape, *, width: int = 16, out_dim: int = 64):
        super().__init__(modality, grid_input_shape("small_cnn", modality, input_shape))
        self.out_dim = out_dim
        self.net = _backbone(input_shape[0], width, out_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return grid_tokens(self.net, x)                  # (B, L, D)
