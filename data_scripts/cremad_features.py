"""CREMA-D inputs of the paper's Conformer encoders (MLB §4.2, after VAVL: Goncalves et al., arXiv 2305.07216):
``python -m data_scripts.cremad features --help``. The models are built by injectable factories (``Models``), so
tests pass small randomly initialised ones and nothing is downloaded; the defaults download the pretrained weights
on first use (into the Hugging Face / torch hub caches), never into this repository.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import shutil
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av
import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from data_scripts.cache import atomic_write_bytes, atomic_write_csv, atomic_write_json
from data_scripts.media import MediaError, read_wav, resample
from mmbal.data.cached import IMAGENET_MEAN, IMAGENET_STD, open_cache

SAMPLE_RATE = 16000                                   # wav2vec 2.0's rate (MLB resamples to 16 kHz)
WAV2VEC2, WAV2VEC2_LAYERS = "facebook/wav2vec2-large-robust", 12   # MLB's Audio_Wav2Vec keeps layers[:12]
HSEMOTION_URL = ("https://github.com/av-savchenko/face-emotion-recognition/raw/main/"
                 "models/affectnet_emotions/enet_b2_8_best.pt")
FACE_THRESHOLD, FACE_SCALE, FACE_SIZE = 0.96, 1.25, 224   # VAVL's face_extractor.py / FaceDataModuleBase
EMBED_BATCH = 64
VERSION = 1

AudioModel = Callable[[torch.Tensor], torch.Tensor]      # (N,) standardised 16 kHz waveform -> (T, D) frames
FaceDetector = Callable[[np.ndarray], "tuple | None"]    # (H, W, 3) uint8 RGB -> (left, top, right, bottom) or None
FaceEmbedder = Callable[[torch.Tensor], torch.Tensor]    # (B, 3, S, S) ImageNet-normalised -> (B, D)

DESCRIPTION = f"""Features of the paper's Conformer setup (MLB §4.2, VAVL), written beside a finished cache
(run `all` or `prepare` first) into <cache>/features/. Resumable: a second run does only what is missing.

  audio   every clip's WAV, resampled to {SAMPLE_RATE} Hz, standardised with the scalar mean / std of the waveforms
          of the fold's training clips (MLB's get_wav_normalizer), through the first {WAV2VEC2_LAYERS} transformer
          layers of {WAV2VEC2} (Hugging Face transformers, frozen): (T, 1024) per clip at
          50 frames/s, one set per fold (the standardisation differs per fold): features/audio/fold<k>/<clip>.npy.
  faces   every video frame (native frame rate): the largest face above {FACE_THRESHOLD} found by
          face-alignment's S3FD detector with its 68 FAN landmarks, cropped square around the landmarks
          (side 1.1 x 1.25 x their mean extent, VAVL's crop), resized to {FACE_SIZE} x {FACE_SIZE}, ImageNet-normalised,
          through HSEmotion's EfficientNet-B2 (enet_b2_8_best, AffectNet emotions, classifier removed): (faces,
          1408) per clip: features/video/<clip>.npy. Frames without a face are skipped (as in VAVL); a clip with no
          face at all is named in features/no_face.csv and left out of the audio step, the statistics, training
          and evaluation, as MLB's loader leaves out clips without a face-feature file.
  stats   per fold, the mean / std of every face dimension over the training clips' frames (MLB's
          get_face_normalizer): features/face_stats_fold<k>.npy; the reader standardises with them and cuts
          sequences to 150 face frames.

Needs `pip install "mmbal[features]"` (transformers, timm, face-alignment). The weights download on first use.
Estimated cost on one GPU for the 7,442 clips: see chapter 8b. Then train, e.g.:
  python -m mmbal train --dataset cremad --data-opt inputs=features --encoder sequence_conformer --data-root <cache>
"""


def wav2vec2_large_robust(device: torch.device) -> AudioModel:
    """Hugging Face's facebook/wav2vec2-large-robust with its first 12 transformer layers (MLB's Audio_Wav2Vec)."""
    from transformers import Wav2Vec2Model
    model = Wav2Vec2Model.from_pretrained(WAV2VEC2)
    del model.encoder.layers[WAV2VEC2_LAYERS:]
    model.eval().to(device)
    return lambda wave: model(wave[None]).last_hidden_state[0]      # (1, N) -> (1, T, 1024) -> (T, 1024)


def fan_detector(device: torch.device, threshold: float = FACE_THRESHOLD) -> FaceDetector:
    """face-alignment's S3FD detector + 2D FAN landmarks (what VAVL uses); the box spans the 68 landmarks."""
    import face_alignment
    fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=str(device), flip_input=False,
                                      face_detector="sfd", face_detector_kwargs={"filter_threshold": threshold})

    def detect(frame: np.ndarray):
        marks = fa.get_landmarks_from_image(frame)                   # list of (68, 2) or None
        boxes = [(m[:, 0].min(), m[:, 1].min(), m[:, 0].max(), m[:, 1].max()) for m in marks or []]
        return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), default=None)
    return detect


class _OldTimmUnpickler(pickle.Unpickler):
    """Finds the classes of a model pickled by timm < 0.9 (HSEmotion's files) in today's timm, which renamed
    ``timm.models.layers.*`` to ``timm.layers.*`` and ``timm.models.efficientnet_blocks`` / ``_builder``."""

    def find_class(self, module: str, name: str):
        if module.startswith("timm.models.layers."):
            module = "timm.layers." + module[len("timm.models.layers."):]
        elif module in ("timm.models.efficientnet_blocks", "timm.models.efficientnet_builder"):
            module = module.replace("timm.models.", "timm.models._")
        return super().find_class(module, name)


OLD_TIMM_PICKLE = types.ModuleType("old_timm_pickle")   # torch.load(pickle_module=...) with the unpickler above
OLD_TIMM_PICKLE.__dict__.update({k: v for k, v in vars(pickle).items() if not k.startswith("__")},
                                Unpickler=_OldTimmUnpickler)


def hsemotion_enet_b2(device: torch.device) -> FaceEmbedder:
    """HSEmotion's enet_b2_8_best (a timm tf_efficientnet_b2 trained on AffectNet) without its classifier: 1408-d."""
    import timm
    path = Path(torch.hub.get_dir()) / "hsemotion" / "enet_b2_8_best.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(HSEMOTION_URL, str(path))
    saved = torch.load(path, map_location="cpu", weights_only=False, pickle_module=OLD_TIMM_PICKLE)  # a whole model
    state = saved.state_dict() if isinstance(saved, torch.nn.Module) else saved
    net = timm.create_model("tf_efficientnet_b2", pretrained=False, num_classes=0)
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier")})
    return net.eval().to(device)


@dataclass
class Models:
    """Factories (device -> model), called only when a clip still needs that model."""

    audio: Callable[[torch.device], AudioModel] = wav2vec2_large_robust
    detector: Callable[[torch.device], FaceDetector] = fan_detector
    embedder: Callable[[torch.device], FaceEmbedder] = hsemotion_enet_b2


def load_wave(path: str | Path) -> torch.Tensor:
    """A WAV's first channel (torchaudio.load(...)[0], as MLB) resampled to 16 kHz: (N,) float32."""
    wave, sr = read_wav(path)                                        # (C, N)
    return resample(torch.from_numpy(wave[0]), sr, SAMPLE_RATE)


def read_frames(path: str | Path) -> list[np.ndarray]:
    """Every frame of a video as (H, W, 3) uint8 RGB."""
    try:
        with av.open(str(path)) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.FFmpegError, IndexError) as err:
        raise MediaError(f"{path}: video decoding failed ({type(err).__name__}: {err})") from None


def face_crop(frame: np.ndarray, box, *, size: int = FACE_SIZE, scale: float = FACE_SCALE) -> torch.Tensor:
    """VAVL's crop: a square of side 1.1 * scale * mean(box width, height) around the box centre, resized to
    (3, size, size) uint8; parts outside the frame are black, as in VAVL's warp."""
    left, top, right, bottom = (float(v) for v in box)
    side = max(1, int((right - left + bottom - top) / 2 * 1.1 * scale))
    y0, x0 = round((top + bottom) / 2 - side / 2), round((left + right) / 2 - side / 2)
    img = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)   # (H, W, 3) -> (3, H, W)
    return TF.resized_crop(img, y0, x0, side, side, [size, size], antialias=True)


def _save(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array.astype(np.float16))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def _wave_moments(raw: Path, clips: list[str], path: Path, progress: bool) -> dict[str, list[float]]:
    """Per clip [n, sum, sum of squares] of its 16 kHz waveform, kept in ``path`` (read once)."""
    moments = json.loads(path.read_text()) if path.exists() else {}
    todo = [c for c in clips if c not in moments]
    for clip in tqdm(todo, desc="CREMA-D features: waveform statistics", unit="clip", disable=not progress):
        w = load_wave(raw / "AudioWAV" / f"{clip}.wav").double()
        moments[clip] = [len(w), float(w.sum()), float((w * w).sum())]
    if todo:
        atomic_write_json(path, moments)
    return moments


def wave_stats(moments: dict, train: list[str]) -> tuple[float, float]:
    """Scalar mean / std over every sample of the training clips (MLB's get_wav_normalizer)."""
    n, s, s2 = np.sum([moments[c] for c in train], axis=0)
    mean = s / n
    return float(mean), float(np.sqrt(max(s2 / n - mean * mean, 1e-12)))


def face_stats(video_dir: Path, train: list[str]) -> np.ndarray:
    """(2, D) mean / std of every face dimension over all frames of the training clips (MLB's get_face_normalizer:
    from sums and sums of squares, one clip in memory at a time)."""
    n, s, s2 = 0, 0.0, 0.0
    for clip in train:
        x = np.load(video_dir / f"{clip}.npy").astype(np.float64)     # (frames, D)
        n, s, s2 = n + len(x), s + x.sum(0), s2 + (x * x).sum(0)
    mean = s / n
    return np.stack([mean, np.sqrt(np.maximum(s2 / n - mean * mean, 1e-12))]).astype(np.float32)


def extract(cache: str | Path, raw: str | Path, *, models: Models | None = None, folds=("0", "1", "2"),
            device: str = "auto", progress: bool = True) -> dict:
    """Write (or complete) <cache>/features for ``folds``; returns the features' meta.json."""
    models, device = models or Models(), torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                                                      if device == "auto" else device)
    c = open_cache(cache, dataset="cremad")
    raw, feats, splits = Path(raw), c.root / "features", c.splits["folds"]
    missing = [f for f in folds if f not in splits]
    if missing:
        raise ValueError(f"folds {', '.join(missing)} are not in {c.root / 'splits.json'} ({', '.join(splits)})")
    clips = sorted({n for f in folds for part in ("train", "val", "test") for n in splits[f][part]})
    split_sha = hashlib.sha256((c.root / "splits.json").read_bytes()).hexdigest()
    old = json.loads((feats / "meta.json").read_text()) if (feats / "meta.json").exists() else None
    if old is not None and old.get("splits_sha256") != split_sha:      # folds changed: per-fold parts are stale
        print(f"{c.root / 'splits.json'} changed since the features were extracted: the per-fold audio features "
              "and statistics are recomputed (the face features are kept)")
        shutil.rmtree(feats / "audio", ignore_errors=True)
        for stale in [feats / "meta.json", *feats.glob("face_stats_fold*.npy"), *feats.glob("wave_stats_fold*.json")]:
            stale.unlink()
    made: dict[str, Callable] = {}

    def model(kind: str):
        if kind not in made:
            made[kind] = getattr(models, kind)(device)
        return made[kind]

    video_dir, decoded = feats / "video", {}
    with torch.inference_mode():
        for clip in tqdm([n for n in clips if not (video_dir / f"{n}.npy").exists()],
                         desc="CREMA-D features: faces", unit="clip", disable=not progress):
            frames = read_frames(raw / "VideoFlash" / f"{clip}.flv")
            boxes = [model("detector")(f) for f in frames]
            crops = [face_crop(f, b) for f, b in zip(frames, boxes) if b is not None]   # (3, S, S) uint8 each
            parts = [model("embedder")(TF.normalize(torch.stack(crops[i:i + EMBED_BATCH]).float().div(255),
                                                    IMAGENET_MEAN, IMAGENET_STD).to(device)).float().cpu().numpy()
                     for i in range(0, len(crops), EMBED_BATCH)]                       # (b, D) each
            _save(video_dir / f"{clip}.npy", np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))
            decoded[clip] = len(frames)
        faces = {n: np.load(video_dir / f"{n}.npy", mmap_mode="r").shape[0] for n in clips}
        no_face = sorted(n for n, k in faces.items() if k == 0)            # left out from here on, as in MLB
        moments = _wave_moments(raw, [n for n in clips if n not in no_face], feats / "wave_moments.json", progress)
        for f in folds:
            train = [n for n in splits[f]["train"] if n not in no_face]
            mean, std = wave_stats(moments, train)
            atomic_write_json(feats / f"wave_stats_fold{f}.json", {"mean": mean, "std": std, "train_clips": len(train)})
            folder = feats / "audio" / f"fold{f}"
            for clip in tqdm([n for part in ("train", "val", "test") for n in splits[f][part]
                              if n not in no_face and not (folder / f"{n}.npy").exists()],
                             desc=f"CREMA-D features: wav2vec 2.0, fold {f}", unit="clip", disable=not progress):
                wave = (load_wave(raw / "AudioWAV" / f"{clip}.wav") - mean) / std
                _save(folder / f"{clip}.npy", model("audio")(wave.to(device)).float().cpu().numpy())
            np.save(feats / f"face_stats_fold{f}.npy", face_stats(video_dir, train))
    atomic_write_csv(feats / "no_face.csv", ["clip", "frames", "reason"],
                     [{"clip": n, "frames": decoded.get(n, ""), "reason": f"no face above {FACE_THRESHOLD} in any "
                       "frame: left out (MLB's loader skips clips without face features)"} for n in no_face])
    done = sorted(p.name[4:] for p in (feats / "audio").glob("fold*")
                  if (feats / f"face_stats_fold{p.name[4:]}.npy").exists())
    lengths = [np.load(p, mmap_mode="r").shape[0] for f in done for p in (feats / "audio" / f"fold{f}").glob("*.npy")]
    meta = {"version": VERSION, "folds": done, "no_face": no_face, "clips": len(clips), "splits_sha256": split_sha,
            "max_frames": {"audio": max(lengths), "video": max(faces.values())},
            "models": {"audio": f"{WAV2VEC2} (first {WAV2VEC2_LAYERS} layers, frozen)",
                       "faces": "face-alignment S3FD + FAN landmarks; HSEmotion enet_b2_8_best"},
            "sample_rate": SAMPLE_RATE, "face": {"threshold": FACE_THRESHOLD, "scale": FACE_SCALE, "size": FACE_SIZE}}
    atomic_write_json(feats / "meta.json", meta)                     # last: its presence means complete
    return meta


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = DESCRIPTION, argparse.RawDescriptionHelpFormatter
    p.add_argument("--fold-ids", default="0,1,2", help="folds to extract audio features and statistics for "
                                                       "(comma-separated; MLB runs 0,1,2)")
    p.add_argument("--device", default="auto", help="auto (a GPU when present), cpu, cuda, cuda:1, ...")


def cmd_features(args) -> int:
    try:
        meta = extract(args.cache, args.raw, folds=[f for f in args.fold_ids.split(",") if f],
                       device=args.device, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, MediaError, ImportError) as err:
        hint = " (pip install 'mmbal[features]')" if isinstance(err, ImportError) else ""
        print(f"error: {err}{hint}")
        return 1
    print(f"CREMA-D features for folds {', '.join(meta['folds'])} in {Path(args.cache) / 'features'}: "
          f"{meta['clips']:,} clips, longest {meta['max_frames']['audio']} audio / {meta['max_frames']['video']} "
          f"face frames; {len(meta['no_face'])} clips without a face (features/no_face.csv)")
    return 0
