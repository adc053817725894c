"""Decoding real-dataset media: MLB's 1-fps frame rule, seeded top-up, audio tracks, bad files."""
import numpy as np
import pytest

from data_scripts import fabricate, media

SIZE = (24, 32)


def left_levels(frames: np.ndarray) -> list[int]:
    """The grey level of the left half of each frame (fabricated frame i has frame_level(i))."""
    return [int(round(f[:, : SIZE[1] // 4].mean())) for f in frames]     # away from the coloured half


def nearest_frame(level: int) -> int:
    return min(range(40), key=lambda i: abs(fabricate.frame_level(i) - level))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    fabricate.write_video(d / "long.avi", seconds=4.2, label=1, audio=fabricate.tone(500, 4.2, 16000), acodec="mp2")
    fabricate.write_video(d / "short.flv", seconds=1.5, vcodec="flv")
    fabricate.write_video(d / "silent.avi", seconds=2.0)
    data = (d / "long.avi").read_bytes()
    (d / "cut.avi").write_bytes(data[: len(data) // 2])
    (d / "pointer.flv").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 401234\n")
    fabricate.write_wav(d / "a.wav", fabricate.tone(300, 1.0, 16000), 16000)
    wav = (d / "a.wav").read_bytes()
    (d / "cut.wav").write_bytes(wav[: len(wav) // 2])
    return d


def test_one_frame_per_second_is_the_first_frame_of_each_second(clips):
    fr = media.read_frames_1fps(clips / "long.avi", n_frames=4, size=SIZE, seed_key="x")
    assert fr.frames.shape == (4, *SIZE, 3) and fr.frames.dtype == np.uint8
    assert [nearest_frame(v) for v in left_levels(fr.frames)] == [0, 10, 20, 30]       # fps 10
    assert (fr.n_one_fps, fr.n_padded, fr.n_decoded) == (4, 0, 42)


def test_top_up_is_seeded_sorted_and_marks_the_extra_frames(clips):
    a = media.read_frames_1fps(clips / "short.flv", n_frames=3, min_saved=3, size=SIZE, seed_key="1001_DFA_ANG_XX")
    b = media.read_frames_1fps(clips / "short.flv", n_frames=3, min_saved=3, size=SIZE, seed_key="1001_DFA_ANG_XX")
    np.testing.assert_array_equal(a.frames, b.frames)                       # seeded: same clip, same frames
    idx = [nearest_frame(v) for v in left_levels(a.frames)]
    assert idx == sorted(idx) and 0 in idx and 10 in idx and len(set(idx)) == 3   # 2 true 1-fps frames + 1 extra
    assert (a.n_one_fps, a.n_padded) == (2, 1)
    others = {tuple(nearest_frame(v) for v in left_levels(
        media.read_frames_1fps(clips / "short.flv", n_frames=3, min_saved=3, size=SIZE, seed_key=k).frames))
        for k in ("a", "b", "c", "d", "e")}
    assert len(others) > 1                                                  # the seed key matters


def test_segment_frames_include_the_end_second_as_mlb(clips):
    fr = media.read_frames_1fps(clips / "long.avi", n_frames=4, size=SIZE, seed_key="s", first_second=1, last_second=3)
    assert [nearest_frame(v) for v in left_levels(fr.frames)][:3] == [10, 20, 30]
    assert fr.frames[3].max() == 0                                          # only 3 frames: zero-padded like MLB
    topped = media.read_frames_1fps(clips / "long.avi", n_frames=4, min_saved=10, size=SIZE, seed_key="s",
                                    first_second=1, last_second=3)
    idx = [nearest_frame(v) for v in left_levels(topped.frames)]
    assert idx[0] == 10 and all(10 <= i < 30 for i in idx) and idx == sorted(idx)


def test_audio_track_mixes_and_reports_absence(clips):
    wave, sr = media.read_audio_track(clips / "long.avi", mix="first")
    assert sr == 16000 and abs(len(wave) - 4.2 * 16000) < 2000
    spectrum = np.abs(np.fft.rfft(wave[:16000]))
    assert np.fft.rfftfreq(16000, 1 / 16000)[spectrum.argmax()] == pytest.approx(500, abs=2)
    assert media.read_audio_track(clips / "silent.avi") is None


def test_truncated_and_pointer_files_are_named(clips):
    with pytest.raises(media.MediaError, match=r"cut\.avi: truncated video \(decoded \d+ of 42 frames\)"):
        media.read_frames_1fps(clips / "cut.avi", n_frames=4, size=SIZE, seed_key="x")
    assert "pointer.flv: Git-LFS pointer file (points to 401,234 bytes)" in media.media_problem(clips / "pointer.flv", kind="video")
    assert media.lfs_pointer(clips / "pointer.flv") == {"oid": "ab12", "size": 401234}
    assert media.lfs_pointer(clips / "long.avi") is None
    assert "cut.wav: truncated WAV" in media.media_problem(clips / "cut.wav", kind="wav")
    assert media.media_problem(clips / "a.wav", kind="wav") is None
    assert "missing" in media.media_problem(clips / "nope.wav", kind="wav")
    with pytest.raises(media.MediaError, match="truncated WAV"):
        media.read_wav(clips / "cut.wav")
