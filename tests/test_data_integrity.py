"""Cache integrity: meta.json records every file; a damaged cache is named (file, reason, the command
that repairs it) when it is opened, `report` says so in one line, and `all` repairs only what is
damaged. An unwritable cache folder is refused before any scanning."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_scripts import cremad, fabricate
from mmbal.data import DATASETS
from mmbal.data.cached import CacheError, open_cache

OPTS = ["--folds", "from-data", "--frame-size", "24x32", "--workers", "0", "--no-progress"]
FILES = ["frames.npy", "audio.npy", "index.csv", "splits.json", "skipped.csv", "meta.json"]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "cremad_cache_v1"


def run(*argv) -> int:
    return cremad.main(cremad.SPEC, [str(a) for a in argv])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cremad_integrity")
    fabricate.fabricate_cremad(root / "raw", actors=range(1001, 1007), emotions=("NEU", "HAP", "SAD"))
    assert run("all", "--raw", root / "raw", "--cache", root / "cache", *OPTS) == 0
    return root / "cache"


def repair_command(cache: Path, damaged: Path) -> str:
    return (f"python -m data_scripts.cremad all --raw {(cache.parent / 'raw').resolve()} --frame-size 24x32 "
            f"--folds from-data --cache {damaged}")


def test_meta_records_every_file(cache):
    files = json.loads((cache / "meta.json").read_text())["files"]
    assert files["frames.npy"] == {"shape": [18, 3, 24, 32, 3], "dtype": "uint8",
                                   "bytes": (cache / "frames.npy").stat().st_size}
    assert files["audio.npy"] == {"shape": [18, 257, 188], "dtype": "float16",
                                  "bytes": (cache / "audio.npy").stat().st_size}
    assert files["audio.npy"]["bytes"] == 128 + 18 * 257 * 188 * 2           # header + float16 payload
    for name in ("index.csv", "splits.json", "skipped.csv"):
        data = (cache / name).read_bytes()
        assert files[name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def bad_index_row(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = "999" + lines[2][lines[2].index(","):]                        # line 3: row 999 of 18
    path.write_text("".join(lines))


DAMAGE = {  # file -> (how it is damaged, what open_cache says, is the re-run decoding?)
    "audio.npy": (truncate, "audio.npy: truncated or not a .npy array (mmap length is greater than file size)", True),
    "frames.npy": (lambda p: p.write_bytes(p.read_bytes() + b"\0" * 64),      # 128-byte header + 124,416
                   "frames.npy: holds uint8 [18, 3, 24, 32, 3] in 124,608 bytes, meta.json says uint8 "
                   "[18, 3, 24, 32, 3] in 124,544 bytes", True),
    "meta.json": (lambda p: p.write_text('{"dataset": "cremad",'), "meta.json: not valid JSON", False),
    "splits.json": (truncate, "splits.json: not the splits JSON (JSONDecodeError", False),
    "index.csv": (bad_index_row, "index.csv: line 3 is not a row of 18 rows with a label below 6: 999,", False),
    "skipped.csv": (lambda p: p.write_text(p.read_text() + "1001_DFA_NEU_XX,prepare,edited by hand\n"),
                    "skipped.csv: its sha256 differs from the one meta.json records", False),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_file_is_named_and_all_repairs_only_it(cache, tmp_path, name, monkeypatch, capsys):
    damage, message, decodes = DAMAGE[name]
    out = tmp_path / "cache"
    shutil.copytree(cache, out)
    damage(out / name)
    with pytest.raises(CacheError) as err:
        DATASETS.create("cremad", seed=109, root=str(out))                  # what training opens first
    assert str(err.value).startswith(f"{out / message}") and err.value.file == name
    assert str(err.value).endswith(f"Repair it with: {repair_command(cache, out)}")
    capsys.readouterr()
    assert run("report", "--raw", cache.parent / "raw", "--cache", out) == 1
    report = capsys.readouterr()
    assert report.err.strip() == f"error: {err.value}" and "Traceback" not in report.err
    real, decoded = cremad.process, []
    monkeypatch.setattr(cremad.SPEC, "process", lambda clip, config: decoded.append(clip) or real(clip, config))
    assert run("all", "--raw", cache.parent / "raw", "--cache", out, *OPTS) == 0
    said = capsys.readouterr().out
    assert f"{out / name} is damaged" in said and "complete and up to date" not in said
    assert len(decoded) == (18 if decodes else 0)
    assert ("re-decoding every clip" if decodes else "the arrays are intact") in said
    for f in FILES:                                                          # repaired = as built
        assert (out / f).read_bytes() == (cache / f).read_bytes(), f


def test_the_old_cache_is_checked_by_what_it_records(tmp_path):
    old = tmp_path / "v1"
    shutil.copytree(FIXTURE, old)
    truncate(old / "frames.npy")
    with pytest.raises(CacheError, match=r"frames\.npy: truncated or not a \.npy array") as err:
        open_cache(old, dataset="cremad")
    assert "python -m data_scripts.cremad all --raw <the raw cremad folder>" in str(err.value)
    shutil.copy(FIXTURE / "frames.npy", old / "frames.npy")
    (old / "audio.npy").write_bytes((FIXTURE / "audio.npy").read_bytes() + b"\0" * 10)   # no bytes record: size
    with pytest.raises(CacheError, match=r"audio\.npy: holds float16 \[6, 257, 188\] in 579,930 bytes, meta\.json "
                                         r"says float16 \[6, 257, 188\] in 579,920 bytes"):
        open_cache(old, dataset="cremad")


@pytest.mark.parametrize("step", ["verify", "prepare", "all"])
def test_an_unwritable_cache_folder_is_refused_before_scanning(cache, tmp_path, step, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for target in (a_file / "cache", a_file):
        assert run(step, "--raw", cache.parent / "raw", "--cache", target, *(OPTS if step != "verify" else [])) == 2
        out = capsys.readouterr()
        assert out.err.strip() == f"error: cannot write the cache folder {target}: {a_file} is a file, not a folder"
        assert "verifying" not in out.out                                    # nothing was scanned


def test_the_loader_reads_the_repaired_arrays(cache, tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(cache, out)
    truncate(out / "audio.npy")
    assert run("prepare", "--raw", cache.parent / "raw", "--cache", out, *OPTS) == 0
    splits = DATASETS.create("cremad", seed=109, root=str(out), image_size=16)
    row = int(splits.test.rows[0])
    np.testing.assert_array_equal(splits.test[0]["audio"][0].numpy(),
                                  np.asarray(open_cache(cache, dataset="cremad").audio[row], np.float32))
