"""Tiny fake CREMA-D / AVE / UCF101 folders in the real on-disk formats (tests, bench, chapter 2).

The media are written with PyAV and soundfile. Frame ``i`` of every video has its left half at grey
level ``frame_level(i)`` (so a test can tell which frames were picked) and its right half in a colour
that depends on the class; the audio is a tone whose pitch depends on the class.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soundfile as sf

from mmbal.data.real import AVE_CLASSES

CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
_COLOURS = np.array([[230, 40, 40], [40, 200, 40], [40, 80, 230], [220, 200, 30], [200, 40, 200],
                     [30, 200, 200]], dtype=np.uint8)


def frame_level(i: int) -> int:
    """Grey level of the left half of frame ``i`` (distinct for the first 40 frames)."""
    return min(250, 8 + 6 * i)


def class_pitch(label: int) -> float:
    """Tone frequency (Hz) of class ``label``: 300, 500, 700, ... Hz."""
    return 300.0 + 200.0 * label


def tone(freq: float, seconds: float, sample_rate: int, *, amp: float = 0.4, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sample_rate, subtype="PCM_16")


def _frame(i: int, label: int, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:, : w // 2] = frame_level(i)
    img[:, w // 2:] = _COLOURS[label % len(_COLOURS)]
    return img


def write_video(path: str | Path, *, seconds: float, label: int = 0, fps: int = 10,
                size: tuple[int, int] = (48, 64), vcodec: str = "mpeg4",
                audio: np.ndarray | None = None, sample_rate: int = 16000, acodec: str = "aac") -> None:
    """Encode ``seconds`` of frames (and optionally a mono track) into ``path``; format from the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.height, vs.width = size
        vs.pix_fmt = "yuv420p"
        vs.options = {"qscale": "1", "qmin": "1", "qmax": "1"}     # near-lossless: tests read frame levels back
        stream_a = None
        if audio is not None:
            stream_a = out.add_stream(acodec, rate=sample_rate)
            stream_a.layout = "stereo" if acodec == "aac" else "mono"
        for i in range(int(round(seconds * fps))):
            for packet in vs.encode(av.VideoFrame.from_ndarray(_frame(i, label, size), format="rgb24")):
                out.mux(packet)
        out.mux(vs.encode())
        if stream_a is not None:
            _encode_audio(out, stream_a, audio, sample_rate)


def _encode_audio(out, stream, audio: np.ndarray, sample_rate: int) -> None:
    channels = 2 if stream.layout.name == "stereo" else 1
    chunk = stream.frame_size or 1024
    fmt = stream.format.name
    for pos in range(0, len(audio), chunk):
        x = np.tile(audio[pos: pos + chunk][None], (channels, 1))          # (C, n)
        if fmt.startswith("s16"):
            x = np.round(x * 32767).astype(np.int16)
        else:
            x = x.astype(np.float32)
        if not fmt.endswith("p"):
            x = x.T.reshape(1, -1)                                          # packed: (1, n * C)
        frame = av.AudioFrame.from_ndarray(x, format=fmt, layout=stream.layout.name)
        frame.sample_rate, frame.pts = sample_rate, pos
        for packet in stream.encode(frame):
            out.mux(packet)
    out.mux(stream.encode())


def fabricate_cremad(root: str | Path, *, actors=range(1001, 1007), emotions=CREMAD_EMOTIONS,
                     sentences=("DFA",), fps: int = 10, size: tuple[int, int] = (48, 64),
                     sample_rate: int = 16000) -> list[str]:
    """``AudioWAV/<actor>_<sentence>_<emotion>_XX.wav`` + ``VideoFlash/<same>.flv``; returns the stems.

    Clip lengths cycle through 1.5, 2.5 and 3.5 s, so some clips need MLB's top-up to 3 frames.
    """
    root = Path(root)
    stems = []
    for a, actor in enumerate(actors):
        for s, sentence in enumerate(sentences):
            for emotion in emotions:
                label = CREMAD_EMOTIONS.index(emotion)
                stem = f"{actor}_{sentence}_{emotion}_XX"
                seconds = (1.5, 2.5, 3.5)[(a + s + label) % 3]
                write_wav(root / "AudioWAV" / f"{stem}.wav",
                          tone(class_pitch(label), seconds, sample_rate, phase=0.1 * a), sample_rate)
                write_video(root / "VideoFlash" / f"{stem}.flv", seconds=seconds, label=label, fps=fps,
                            size=size, vcodec="flv")
                stems.append(stem)
    return stems


AVE_FAKE_IDS = ("a1B2c3D4e5F", "b2C3d4E5f6G", "c3D4e5F6g7H", "d4E5f6G7h8I", "e5F6g7H8i9J",
                "f6G7h8I9j0K", "g7H8i9J0k1L", "h8I9j0K1l2M", "i9J0k1L2m3N")


def fabricate_ave(root: str | Path, *, fps: int = 10, size: tuple[int, int] = (48, 64),
                  seconds: float = 4.0, sample_rate: int = 16000) -> dict[str, list[str]]:
    """``AVE/<id>.mp4`` + ``Annotations.txt`` + ``trainSet/valSet/testSet.txt`` for 3 classes, 9 videos.

    The train list also names test video ``AVE_FAKE_IDS[8]`` (another segment), as 8 real ids do.
    """
    root = Path(root)
    rows = []
    for k, vid in enumerate(AVE_FAKE_IDS):
        label = k % 3
        start, end = (0, 4) if k % 2 == 0 else (1, 3)
        write_video(root / "AVE" / f"{vid}.mp4", seconds=seconds, label=label, fps=fps, size=size,
                    audio=tone(class_pitch(label), seconds, sample_rate), sample_rate=sample_rate)
        rows.append(f"{AVE_CLASSES[label]}&{vid}&good&{start}&{end}")
    lists = {"train": rows[:5] + [rows[8].replace("&0&4", "&2&4")], "val": rows[5:7], "test": rows[7:9]}
    header = "Category&VideoID&Quality&StartTime&EndTime"
    (root / "Annotations.txt").write_text("\n".join([header, *rows, lists["train"][-1]]) + "\n")
    for part, name in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        (root / name).write_text("\n".join(lists[part]) + "\n")
    return lists


UCF_FAKE_CLASSES = (("ApplyEyeMakeup", False), ("Basketball", True), ("Drumming", True))


def fabricate_ucf101(root: str | Path, *, classes=UCF_FAKE_CLASSES, groups: int = 4, fps: int = 10,
                     size: tuple[int, int] = (48, 64), seconds: float = 4.5,
                     sample_rate: int = 16000) -> list[str]:
    """``UCF-101/<Class>/v_<Class>_gGG_c01.avi`` (+ audio where the class has it) and split-1 lists.

    Split 1 tests on group g01 and trains on the rest. The last clip of every audio class lasts only
    2.5 s, so MLB's "at least 4 frames at 1 fps" rule drops it.
    """
    root = Path(root)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {name}\n" for i, (name, _) in enumerate(classes)))
    train, test, names = [], [], []
    for i, (name, has_audio) in enumerate(classes):
        for g in range(1, groups + 1):
            rel = f"{name}/v_{name}_g{g:02d}_c01.avi"
            secs = 2.5 if (has_audio and g == groups) else seconds
            audio = tone(class_pitch(i), secs, sample_rate) if has_audio else None
            write_video(root / "UCF-101" / rel, seconds=secs, label=i, fps=fps, size=size, audio=audio,
                        sample_rate=sample_rate, acodec="mp2")
            if g == 1:
                test.append(f"{rel}\n")
            else:
                train.append(f"{rel} {i + 1}\n")
            names.append(rel)
    (lists / "trainlist01.txt").write_text("".join(train))
    (lists / "testlist01.txt").write_text("".join(test))
    return names
