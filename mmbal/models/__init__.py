"""Models: encoder families and fusions (registries) and the multimodal model builder."""
from __future__ import annotations

from typing import Any

from mmbal.models.base import Encoder, Fusion
from mmbal.models.conformer import ConformerEncoder
from mmbal.models.fusion import (ConcatFusion, FiLMFusion, GatedFusion, MLPFusion, SumFusion,
                                 TransformerFusion)
from mmbal.models.multimodal import ROLES, MultimodalModel
from mmbal.models.resnet import ResNet18Audio, ResNet18Frames
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


@ENCODERS.register("resnet18")
def resnet18(modality: str, input_shape, **options) -> Encoder:
    """ResNet-18 from scratch (torchvision): spectrogram (C, F, T) or frames (C, T, H, W) pooled over T, H, W."""
    if len(input_shape) == 3:
        return ResNet18Audio(input_shape, modality=modality, **options)
    if len(input_shape) == 4:
        return ResNet18Frames(input_shape, modality=modality, **options)
    raise ValueError(f"resnet18: {modality!r} input must be (C, F, T) or (C, T, H, W), got {input_shape}")


@ENCODERS.register("conformer")
def conformer(modality: str, input_shape, **options) -> Encoder:
    """torchaudio Conformer (5 x 512, 8 heads) over spectrogram frames, per-frame CNN or precomputed features."""
    return ConformerEncoder(modality, input_shape, **options)


@FUSIONS.register("sum")
def sum_(modalities, dims, num_classes, **options) -> Fusion:
    """Late sum of per-modality linear classifiers (each with its own bias)."""
    return SumFusion(modalities, dims, num_classes, **options)


@FUSIONS.register("concat")
def concat(modalities, dims, num_classes, **options) -> Fusion:
    """Late linear fusion over the concatenated features (the paper's "Late-Linear")."""
    return ConcatFusion(modalities, dims, num_classes, **options)


@FUSIONS.register("mlp")
def mlp(modalities, dims, num_classes, **options) -> Fusion:
    """Mid fusion: summed per-modality projections, then a ReLU/Dropout MLP (the paper's "Mid-MLP")."""
    return MLPFusion(modalities, dims, num_classes, **options)


@FUSIONS.register("film")
def film(modalities, dims, num_classes, **options) -> Fusion:
    """FiLM: audio features scale and shift the video features (exactly two modalities)."""
    return FiLMFusion(modalities, dims, num_classes, **options)


@FUSIONS.register("gated")
def gated(modalities, dims, num_classes, **options) -> Fusion:
    """Gated: sigmoid(audio projection) gates the video projection (exactly two modalities)."""
    return GatedFusion(modalities, dims, num_classes, **options)


@FUSIONS.register("transformer")
def transformer(modalities, dims, num_classes, **options) -> Fusion:
    """Token fusion: CLS + projected tokens of every modality through a small transformer encoder."""
    return TransformerFusion(modalities, dims, num_classes, **options)


def _create(registry: Registry, name: str, **kwargs):
    """registry.create, with an unknown option reported as a ValueError naming the component."""
    factory = registry.get(name)
    try:
        return factory(**kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise ValueError(f"{registry.kind} {name!r}: {err}") from None
        raise


def build_model(*, input_shapes: dict[str, tuple], num_classes: int, encoder: str = "small_cnn",
                fusion: str = "concat", encoder_options: dict[str, Any] | None = None,
                fusion_options: dict[str, Any] | None = None) -> MultimodalModel:
    """One encoder of the family per modality, unimodal heads and the named fusion."""
    encoders = {m: _create(ENCODERS, encoder, modality=m, input_shape=shape, **(encoder_options or {}))
                for m, shape in input_shapes.items()}
    dims = {m: e.out_dim for m, e in encoders.items()}
    fused = _create(FUSIONS, fusion, modalities=tuple(input_shapes), dims=dims,
                    num_classes=num_classes, **(fusion_options or {}))
    return MultimodalModel(encoders, fused, num_classes)


__all__ = ["ENCODERS", "FUSIONS", "ROLES", "ConcatFusion", "ConformerEncoder", "Encoder", "FiLMFusion",
           "Fusion", "GatedFusion", "MLPFusion", "MultimodalModel", "ResNet18Audio", "ResNet18Frames",
           "SumFusion", "TransformerFusion", "build_model"]
