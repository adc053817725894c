"""Small CNN encoders sized for Digits-AV (spectrograms of ~64x30, frames of ~16x16).

GroupNorm instead of BatchNorm: joint training on Digits-AV was unstable with BatchNorm
(reference/data.md §6b).
"""
from __future__ import annotations

import torch
from torch import nn

from mmbal.models.base import Encoder


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


class SmallAudioCNN(Encoder):
    """Three conv blocks over a (1, F, T) spectrogram; tokens are the final (F', T') grid cells."""

    def __init__(self, input_shape, *, width: int = 16, out_dim: int = 64):
        super().__init__("audio", (input_shape[0], None, None))
        self.out_dim = out_dim
        self.net = _backbone(input_shape[0], width, out_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)                                  # (B, D, F', T')
        return h.flatten(2).transpose(1, 2)              # (B, F'*T', D)


class SmallFrameCNN(Encoder):
    """The same 2D CNN on every frame of a (C, T, H, W) clip; tokens are all frames' grid cells."""

    def __init__(self, input_shape, *, width: int = 16, out_dim: int = 64):
        super().__init__("video", (input_shape[0], None, None, None))
        self.out_dim = out_dim
        self.net = _backbone(input_shape[0], width, out_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)    # (B*T, C, H, W)
        y = self.net(frames)                                  # (B*T, D, H', W')
        y = y.flatten(2).transpose(1, 2)                      # (B*T, H'*W', D)
        return y.reshape(b, -1, self.out_dim)                 # (B, T*H'*W', D)
