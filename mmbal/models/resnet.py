"""ResNet-18 encoders of OGM-GE / MLB on torchvision's ResNet: the spectrogram (C = 1
channel) or every frame of a clip through a 2D ResNet-18; tokens are the final cells, so their mean is the
global (audio) or 3D (video, over T, H, W) average pool of the official code. Output: 512-d."""
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from mmbal.models.base import ENCODERS, GridEncoder

NORMS = {"batch": nn.BatchNorm2d, "group": partial(nn.GroupNorm, 32)}


def load_pretrained(net: ResNet, path: str | Path, in_channels: int) -> None:
    """Load a local ImageNet ResNet-18 state dict (never downloaded), without ``fc.*``; for
    ``in_channels != 3`` conv1's RGB kernels are averaged over colour and repeated (a spectrogram stem)."""
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


@ENCODERS.register("resnet18")
class ResNet18(GridEncoder):
    """ResNet-18 from scratch (torchvision): spectrogram (C, F, T) or frames (C, T, H, W) pooled over T, H, W."""
    out_dim = 512

    def __init__(self, modality: str, input_shape, *, layers: Sequence[int] = (2, 2, 2, 2),
                 norm: str = "batch", pretrained_weights: str | None = None):
        super().__init__(modality, input_shape, "resnet18")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"resnet18: layers must be 4 block counts >= 1, got {layers}")
        if norm not in NORMS:
            raise ValueError(f"resnet18: norm must be one of {tuple(NORMS)}, got {norm!r}")
        net = ResNet(BasicBlock, [int(n) for n in layers], norm_layer=NORMS[norm])   # what resnet18() builds
        if input_shape[0] != 3:
            net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        if pretrained_weights is not None:
            load_pretrained(net, pretrained_weights, input_shape[0])
        self.trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,
                                   net.layer3, net.layer4)   # (N, C, H, W) -> (N, 512, H/32, W/32), no avgpool / fc
