"""The paper's real datasets (CREMA-D, AVE, UCF101), read from the cache ``python -m data_scripts.<name>`` prepares.

MLB runs seeds 109 / 19 / 337; each selects a fold: CREMA-D folds 0 / 1 / 2 (speaker-independent),
UCF101 official splits 1 / 2 / 3; AVE has one official split. Labels follow MLB's class order.
"""
from __future__ import annotations

from mmbal.data.base import DATASETS, DatasetSplits
from mmbal.data.cached import cached_splits, feature_splits

CREMAD_CLASSES = ["neutral", "happy", "sad", "fear", "disgust", "anger"]   # OGM-GE / MLB order
AVE_CLASSES = [  # MLB's order (datasets/AVE/AVE_Dataset.py); the strings are AVE's category names
    "Church bell", "Male speech, man speaking", "Bark", "Fixed-wing aircraft, airplane", "Race car, auto racing",
    "Female speech, woman speaking", "Helicopter", "Violin, fiddle", "Flute", "Ukulele", "Frying (food)", "Truck",
    "Shofar", "Motorcycle", "Acoustic guitar", "Train horn", "Clock", "Banjo", "Goat", "Baby cry, infant cry", "Bus",
    "Chainsaw", "Cat", "Horse", "Toilet flush", "Rodents, rats, mice", "Accordion", "Mandolin",
]
CREMAD_FOLD_OF_SEED = {109: "0", 19: "1", 337: "2"}
UCF101_SPLIT_OF_SEED = {109: "1", 19: "2", 337: "3"}      # UCF101's 51 audio classes come from the cache


@DATASETS.register("cremad")
def cremad(*, seed: int, root: str | None = None, fold: int | str | None = None, image_size: int = 224,
           inputs: str = "media", max_frames: int = 150, fold_set: str | None = None) -> DatasetSplits:
    """CREMA-D (6 emotions) from a prepared cache; fold 0/1/2 (default: from seed 109/19/337, else 0). ``inputs``:
    media (frames + spectrogram) or features (wav2vec 2.0 / face-embedding sequences, faces cut to ``max_frames``)."""
    fold = CREMAD_FOLD_OF_SEED.get(seed, "0") if fold is None else str(fold)
    if inputs not in ("media", "features"):
        raise ValueError(f"cremad: inputs must be media or features, got {inputs!r}")
    media = cached_splits(root, dataset="cremad", fold=fold, seed=seed, image_size=image_size,
                          fold_set=fold_set)    # mlb | regenerated: the folds the cache must hold (None: any)
    return feature_splits(root, fold=fold, max_frames=max_frames) if inputs == "features" else media


@DATASETS.register("ave")
def ave(*, seed: int, root: str | None = None, image_size: int = 224) -> DatasetSplits:
    """AVE (28 events) from a prepared cache: the official split; the seed only drives augmentation."""
    return cached_splits(root, dataset="ave", fold="0", seed=seed, image_size=image_size)


@DATASETS.register("ucf101")
def ucf101(*, seed: int, root: str | None = None, split: int | str | None = None, image_size: int = 224,
           mlb_bgr_quirk: bool = False) -> DatasetSplits:
    """UCF101 audio + RGB (51 classes) from a prepared cache; split 1/2/3 (default: from seed 109/19/337, else 1)."""
    split = UCF101_SPLIT_OF_SEED.get(seed, "1") if split is None else str(split)
    return cached_splits(root, dataset="ucf101", fold=split, seed=seed, image_size=image_size, bgr_0_255=mlb_bgr_quirk)
