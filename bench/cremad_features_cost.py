"""Cost of `python -m data_scripts.cremad features` on the whole of CREMA-D, from the speed of the real architectures
(randomly initialised: the speed does not depend on the weights, and nothing is downloaded): wav2vec 2.0 large
(robust) with 12 layers, face-alignment's S3FD detector and 2D FAN, and timm's tf_efficientnet_b2. Prints seconds
per call and the estimated hours. Needs `pip install "mmbal[features]"`. Run it on the machine you will extract on:

  python bench/cremad_features_cost.py --device cuda
"""
import argparse
import json
import time

import torch


def seconds(fn, *, repeats: int, device: torch.device) -> float:
    """Mean wall-clock seconds of ``fn()`` after two warm-up calls."""
    with torch.inference_mode():
        for _ in range(2):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--clips", type=int, default=7442, help="clips to extract (CREMA-D: 7,442)")
    p.add_argument("--seconds", type=float, default=2.5, help="mean clip duration in seconds")
    p.add_argument("--fps", type=float, default=30.0, help="video frame rate (every frame is searched for a face)")
    p.add_argument("--frame", default="360x480", help="video frame HxW")
    p.add_argument("--folds", type=int, default=3, help="audio features are extracted once per fold")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", help="also write the timings and the estimate as JSON")
    args = p.parse_args()
    device, (h, w) = torch.device(args.device), (int(v) for v in args.frame.split("x"))
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN
    import timm
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    w2v = Wav2Vec2Model(Wav2Vec2Config(  # facebook/wav2vec2-large-robust's sizes, 12 of its 24 layers kept
        hidden_size=1024, num_hidden_layers=12, num_attention_heads=16, intermediate_size=4096,
        feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)).eval().to(device)
    detector, landmarks = s3fd().eval().to(device), FAN(4).eval().to(device)
    enet = timm.create_model("tf_efficientnet_b2", pretrained=False, num_classes=0).eval().to(device)
    wave = torch.randn(1, int(args.seconds * 16000), device=device)
    frame, face, faces = (torch.randn(1, 3, h, w, device=device), torch.randn(1, 3, 256, 256, device=device),
                          torch.randn(64, 3, 224, 224, device=device))
    t = {"wav2vec 2.0 (1 clip)": seconds(lambda: w2v(wave), repeats=args.repeats, device=device),
         "S3FD (1 frame)": seconds(lambda: detector(frame), repeats=args.repeats, device=device),
         "FAN (1 face)": seconds(lambda: landmarks(face), repeats=args.repeats, device=device),
         "EfficientNet-B2 (64 faces)": seconds(lambda: enet(faces), repeats=args.repeats, device=device)}
    frames = args.seconds * args.fps
    per_clip = {"audio": args.folds * t["wav2vec 2.0 (1 clip)"],
                "faces": frames * (t["S3FD (1 frame)"] + t["FAN (1 face)"] + t["EfficientNet-B2 (64 faces)"] / 64)}
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}")
    for name, s in t.items():
        print(f"  {name:28s} {1000 * s:9.2f} ms")
    for name, s in per_clip.items():
        print(f"  {name:28s} {s:9.3f} s per clip -> {s * args.clips / 3600:6.2f} h for {args.clips:,} clips")
    print(f"  {'total (models only)':28s} {sum(per_clip.values()) * args.clips / 3600:6.2f} h; decoding the videos "
          "and writing the arrays come on top")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": "python bench/cremad_features_cost.py " + " ".join(
                           f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
                       "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
                       "torch": torch.__version__, "settings": {k: v for k, v in vars(args).items() if k != "out"},
                       "ms_per_call": {k: round(1000 * v, 3) for k, v in t.items()},
                       "seconds_per_clip": {k: round(v, 4) for k, v in per_clip.items()},
                       "hours": {k: round(v * args.clips / 3600, 3) for k, v in per_clip.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
