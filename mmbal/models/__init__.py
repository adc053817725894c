"""Models: encoder families and fusions (registries) and the multimodal model builder."""
from __future__ import annotations

from typing import Any

from mmbal.models.base import Encoder, Fusion
from mmbal.models.fusion import ConcatFusion
from mmbal.models.multimodal import ROLES, MultimodalModel
from mmbal.models.small_cnn import SmallAudioCNN, SmallFrameCNN
from mmbal.registry import Registry

ENCODERS = Registry("encoder")
FUSIONS = Registry("fusion")


@ENCODERS.register("small_cnn")
def small_cnn(modality: str, input_shape, **options) -> Encoder:
    """Small GroupNorm CNNs sized for Digits-AV (audio spectrogram / per-frame video)."""
    if len(input_shape) == 3:
        return SmallAudioCNN(input_shape, **options)
    if len(input_shape) == 4:
        return SmallFrameCNN(input_shape, **options)
    raise ValueError(f"small_cnn: {modality!r} input must be (C, F, T) or (C, T, H, W), got {input_shape}")


@FUSIONS.register("concat")
def concat(modalities, dims, num_classes, **options) -> Fusion:
    """Late linear fusion over the concatenated features (the paper's "Late-Linear")."""
    return ConcatFusion(modalities, dims, num_classes, **options)


def build_model(*, input_shapes: dict[str, tuple], num_classes: int, encoder: str = "small_cnn",
                fusion: str = "concat", encoder_options: dict[str, Any] | None = None,
                fusion_options: dict[str, Any] | None = None) -> MultimodalModel:
    """One encoder of the family per modality, unimodal heads and the named fusion."""
    encoders = {m: ENCODERS.create(encoder, modality=m, input_shape=shape, **(encoder_options or {}))
                for m, shape in input_shapes.items()}
    dims = {m: e.out_dim for m, e in encoders.items()}
    fused = FUSIONS.create(fusion, modalities=tuple(input_shapes), dims=dims,
                           num_classes=num_classes, **(fusion_options or {}))
    return MultimodalModel(encoders, fused, num_classes)


__all__ = ["ENCODERS", "FUSIONS", "ROLES", "Encoder", "Fusion", "MultimodalModel", "build_model"]
