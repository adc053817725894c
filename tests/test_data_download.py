"""The download steps, without the network: file:// mirrors, a closed local port, and --help texts."""
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from data_scripts import ave as ave_cli
from data_scripts import cremad as cremad_cli
from data_scripts import ucf101 as ucf_cli
from data_scripts import fabricate
from data_scripts._download import DownloadError, fetch, fetch_pinned, resolve_pointers

OFFLINE = "http://127.0.0.1:9"          # the discard port: refused at once, never leaves the machine


def pointer_for(media: Path) -> str:
    data = media.read_bytes()
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n")


@pytest.fixture
def lfs_checkout(tmp_path):
    """A CREMA-D checkout whose media are Git-LFS pointers, and a file:// 'LFS server' holding the media."""
    server = tmp_path / "server"
    fabricate.fabricate_cremad(server, actors=[1001], emotions=("ANG", "SAD"))
    raw = tmp_path / "raw"
    for media in sorted(server.glob("*/*")):
        dest = raw / media.parent.name / media.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(pointer_for(media))
    return raw, server


def test_pointers_are_replaced_by_checked_media(lfs_checkout):
    raw, server = lfs_checkout
    files = [(p, f"{p.parent.name}/{p.name}") for p in sorted(raw.glob("*/*"))]
    assert resolve_pointers(files, [OFFLINE, server.as_uri()], workers=2, progress=False) == []
    for p, rel in files:
        assert p.read_bytes() == (server / rel).read_bytes()
    assert resolve_pointers(files, [OFFLINE], workers=2, progress=False) == []      # resumable: nothing left to do


def test_wrong_content_is_refused_and_the_pointer_kept(lfs_checkout, tmp_path):
    raw, server = lfs_checkout
    wav = raw / "AudioWAV" / "1001_DFA_ANG_XX.wav"
    (server / "AudioWAV" / "1001_DFA_ANG_XX.wav").write_bytes(b"<html>quota exceeded</html>")
    errors = resolve_pointers([(wav, "AudioWAV/1001_DFA_ANG_XX.wav")], [server.as_uri()], progress=False)
    assert len(errors) == 1 and "does not match the pointer's sha256" in errors[0]
    assert wav.read_text().startswith("version https://git-lfs")


def test_offline_download_fails_with_a_clear_message(lfs_checkout, tmp_path, capsys):
    with pytest.raises(DownloadError, match=r"cannot download http://127\.0\.0\.1:9/x\.zip: .*offline\?"):
        fetch(f"{OFFLINE}/x.zip", tmp_path / "x.zip", progress=False)
    raw, _ = lfs_checkout
    rc = cremad_cli.main(cremad_cli.SPEC, ["download", "--raw", str(raw), "--media-url", OFFLINE, "--no-progress"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "4 files are still Git-LFS pointers" in err and "1001_DFA_ANG_XX" in err
    rc = ave_cli.main(ave_cli.SPEC, ["download", "--raw", str(tmp_path / "ave"), "--archive", f"{OFFLINE}/AVE.zip"])
    assert rc == 3 and "cannot download" in capsys.readouterr().err


@pytest.mark.parametrize("cli", [cremad_cli, ave_cli, ucf_cli])
def test_help_explains_every_step(cli, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(cli.SPEC, ["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for step in ("download", "verify", "prepare", "report", "all", "Exit codes"):
        assert step in text


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "data_scripts.ucf101", "prepare", "--help"], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and "--splits {committed,from-data}" in out.stdout and "--workers" in out.stdout


# ---------------------------------------------------------------- pinned sha256 of every fetched archive

def test_every_fetched_archive_has_a_pin():
    for pin in (cremad_cli.MLB_FOLDS_SHA256, ucf_cli.LISTS_SHA256):           # published / computed: pinned
        assert len(pin) == 64 and int(pin, 16) >= 0
    assert ave_cli.ARCHIVE_SHA256 is None and ucf_cli.VIDEOS_SHA256 is None   # none published: printed to compare


@pytest.fixture
def archive(tmp_path):
    """A fabricated zip on a file:// 'server' and its sha256."""
    server = tmp_path / "server" / "lists.zip"
    server.parent.mkdir()
    with zipfile.ZipFile(server, "w") as z:
        z.writestr("ucfTrainTestlist/classInd.txt", "1 ApplyEyeMakeup\n")
    return server, hashlib.sha256(server.read_bytes()).hexdigest()


def test_the_pin_is_checked_after_download_and_on_reuse(archive, tmp_path, capsys):
    server, good = archive
    dest = tmp_path / "dl" / "lists.zip"
    assert fetch_pinned(server.as_uri(), dest, good, pin="P") == dest and dest.read_bytes() == server.read_bytes()
    dest.write_bytes(b"<html>quota exceeded</html>")                        # a file already there is checked too
    with pytest.raises(DownloadError, match=f"{dest} has sha256 [0-9a-f]{{64}}, not the pinned {good} \\(P\\)"):
        fetch_pinned(server.as_uri(), dest, good, pin="P")
    assert dest.exists()                                                     # not ours to delete
    dest.unlink()
    with pytest.raises(DownloadError, match="not the pinned 000"):
        fetch_pinned(server.as_uri(), dest, "0" * 64, pin="P")
    assert not dest.exists() and not list(dest.parent.iterdir())           # a bad fresh download is removed
    capsys.readouterr()
    fetch_pinned(server.as_uri(), dest, None, pin="data_scripts.ave.ARCHIVE_SHA256")
    out = capsys.readouterr().out
    assert f"no sha256 is published for lists.zip; this copy has sha256 {good}" in out
    assert f'set data_scripts.ave.ARCHIVE_SHA256 = "{good}"' in out


def test_the_download_steps_check_their_pins(archive, tmp_path, monkeypatch, capsys):
    server, good = archive
    raw = tmp_path / "ucf"
    (raw / "UCF-101").mkdir(parents=True)                                   # videos there: only the lists zip
    argv = ["download", "--raw", str(raw), "--lists-archive", str(server), "--no-progress"]
    monkeypatch.setattr(ucf_cli, "LISTS_SHA256", "f" * 64)
    assert ucf_cli.main(ucf_cli.SPEC, argv) == 3
    assert f"not the pinned {'f' * 64} (data_scripts.ucf101.LISTS_SHA256)" in capsys.readouterr().err
    assert not (raw / "ucfTrainTestlist").exists()                          # nothing unpacked
    monkeypatch.setattr(ucf_cli, "LISTS_SHA256", good)
    assert ucf_cli.main(ucf_cli.SPEC, argv) == 0 and (raw / "ucfTrainTestlist" / "classInd.txt").exists()
    monkeypatch.setattr(cremad_cli, "MLB_FOLDS_URL", server.as_uri())
    monkeypatch.setattr(cremad_cli, "MLB_FOLDS_SHA256", "e" * 64)
    fetch_argv = ["fetch-mlb-folds", "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert cremad_cli.main(cremad_cli.SPEC, fetch_argv) == 3
    assert "data_scripts.cremad.MLB_FOLDS_SHA256" in capsys.readouterr().err
    monkeypatch.setattr(cremad_cli, "MLB_FOLDS_SHA256", good)
    assert cremad_cli.main(cremad_cli.SPEC, fetch_argv) == 0
    monkeypatch.setattr(ave_cli, "ARCHIVE_SHA256", "d" * 64)
    assert ave_cli.main(ave_cli.SPEC, ["download", "--raw", str(tmp_path / "ave"), "--archive", str(server)]) == 3
    assert "data_scripts.ave.ARCHIVE_SHA256" in capsys.readouterr().err
