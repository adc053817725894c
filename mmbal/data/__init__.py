"""Datasets: the registry and every registered dataset (importing this module registers them)."""
from mmbal.data.base import DATASETS, DatasetSplits, MultimodalDataset, build_dataset, make_loader
from mmbal.data import synthetic_av  # noqa: F401  (registers "synthetic_av")
from mmbal.data import digits_av  # noqa: F401  (registers "digits_av")
from mmbal.data import cremad  # noqa: F401  (registers "cremad")
from mmbal.data import ave  # noqa: F401  (registers "ave")
from mmbal.data import ucf101  # noqa: F401  (registers "ucf101")

__all__ = ["DATASETS", "DatasetSplits", "MultimodalDataset", "build_dataset", "make_loader"]
