"""Datasets: the registry and every registered dataset (importing this module registers them)."""
from mmbal.data.base import DATASETS, DatasetSplits, MultimodalDataset, make_loader
from mmbal.data import digits_av, real, synthetic_av  # noqa: F401  (register their datasets)

__all__ = ["DATASETS", "DatasetSplits", "MultimodalDataset", "make_loader"]
