"""Datasets: the registry and every registered dataset (importing this module registers them)."""
from mmbal.data.base import DATASETS, DatasetSplits, MultimodalDataset, build_dataset, make_loader
from mmbal.data import synthetic_av  # noqa: F401  (registers "synthetic_av")

__all__ = ["DATASETS", "DatasetSplits", "MultimodalDataset", "build_dataset", "make_loader"]
