"""Models: encoder families and fusions (registered where they are defined) and the model builder."""
from typing import Any

from mmbal.models import conformer, fusion, resnet, sequence, small_cnn  # noqa: F401  (register their encoders and fusions)
from mmbal.models.base import ENCODERS, FUSIONS, Encoder, Fusion
from mmbal.models.multimodal import ROLES, MultimodalModel
from mmbal.models.unimodal import EnsembleModel, UnimodalModel


def build_model(*, input_shapes: dict[str, tuple], num_classes: int, encoder: str = "small_cnn",
                fusion: str = "concat", encoder_options: dict[str, Any] | None = None,
                fusion_options: dict[str, Any] | None = None) -> MultimodalModel:
    """One encoder of the family per modality, unimodal heads and the named fusion."""
    encoders = {m: ENCODERS.create(encoder, modality=m, input_shape=shape, **(encoder_options or {}))
                for m, shape in input_shapes.items()}
    dims = {m: e.out_dim for m, e in encoders.items()}
    fused = FUSIONS.create(fusion, modalities=tuple(input_shapes), dims=dims, num_classes=num_classes,
                           **(fusion_options or {}))
    return MultimodalModel(encoders, fused, num_classes)


__all__ = ["ENCODERS", "FUSIONS", "ROLES", "EnsembleModel", "Encoder", "Fusion", "MultimodalModel", "UnimodalModel",
           "build_model"]
