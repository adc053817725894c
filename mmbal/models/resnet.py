"""ResNet-18 encoders of OGM-GE / MLB (paper §4.2), built on torchvision's ResNet.

Audio: a ResNet-18 whose first convolution takes the C-channel (C = 1) spectrogram (B, C, F, T).
Video: every frame of (B, C, T, H, W) through one 2D ResNet-18 (frames folded into the batch).
Tokens are the final feature-map cells, so the model's mean over tokens is global average pooling
(audio) or 3D average pooling over T, H, W (video), as in the official code. Output: 512-d.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock, ResNet

from mmbal.models.base import ENCODERS, Encoder, grid_input_shape, grid_tokens

NORMS = ("batch", "group")
RESNET18_LAYERS = (2, 2, 2, 2)


def _norm_layer(norm: str):
    if norm not in NORMS:
        raise ValueError(f"resnet18: norm must be one of {NORMS}, got {norm!r}")
    return nn.BatchNorm2d if norm == "batch" else partial(nn.GroupNorm, 32)


def load_pretrained(net: ResNet, path: str | Path, in_channels: int) -> None:
    """Load a local ImageNet ResNet-18 state dict (never downloaded); ``fc.*`` is dropped.

    For ``in_channels != 3`` the RGB kernels of conv1 are averaged over colour and repeated,
    the usual way to start a 1-channel (spectrogram) stem from ImageNet weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resnet18: pretrained_weights file {path} does not exist "
                                "(mmbal never downloads weights; save torchvision's state dict there)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    w = state["conv1.weight"]                                            # (64, 3, 7, 7)
    if in_channels != w.shape[1]:
        state["conv1.weight"] = w.mean(1, keepdim=True).repeat(1, in_channels, 1, 1)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("fc.")]:
        raise ValueError(f"resnet18: {path} is not a ResNet-18 state dict "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def resnet18_trunk(in_channels: int, *, layers: Sequence[int] = RESNET18_LAYERS, norm: str = "batch",
                   pretrained_weights: str | Path | None = None) -> nn.Sequential:
    """torchvision's ResNet-18 (random init unless weights are given) without avgpool and fc."""
    if len(layers) != 4 or any(int(n) < 1 for n in layers):
        raise ValueError(f"resnet18: layers must be 4 block counts >= 1, got {layers}")
    if tuple(layers) == RESNET18_LAYERS:
        net = resnet18(weights=None, norm_layer=_norm_layer(norm))
    else:
        net = ResNet(BasicBlock, [int(n) for n in layers], norm_layer=_norm_layer(norm))
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    if pretrained_weights is not None:
        load_pretrained(net, pretrained_weights, in_channels)
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                         net.layer1, net.layer2, net.layer3, net.layer4)   # (N, C, H, W) -> (N, 512, H/32, W/32)


@ENCODERS.register("resnet18")
class ResNet18(Encoder):
    """ResNet-18 from scratch (torchvision): spectrogram (C, F, T) or frames (C, T, H, W) pooled over T, H, W.

    Tokens are the final feature-map cells: (F/32 x T/32) of the spectrogram, or those of every
    frame through one 2D trunk, whose mean equals the official 3D average pool over (T, H, W).
    """

    out_dim = 512

    def __init__(self, modality: str, input_shape, *, layers: Sequence[int] = RESNET18_LAYERS,
                 norm: str = "batch", pretrained_weights: str | None = None):
        super().__init__(modality, grid_input_shape("resnet18", modality, input_shape))
        self.trunk = resnet18_trunk(input_shape[0], layers=layers, norm=norm,
                                    pretrained_weights=pretrained_weights)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return grid_tokens(self.trunk, x)                   # (B, L, 512)
