"""Colab runs the chapter a reader opened at a pinned release: every chapter's badge and bootstrap
cell name the same repository (from _config.yml) and the same tag (v<version> of pyproject.toml)."""
import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("colab_cells", ROOT / "scripts" / "colab_cells.py")
colab_cells = importlib.util.module_from_spec(spec)
spec.loader.exec_module(colab_cells)


def test_every_chapter_pins_the_same_repository_and_release():
    url, ref = colab_cells.pinned()
    assert url == "https://github.com/mmbal/mmbal" and ref.startswith("v")
    chapters = colab_cells.chapters()
    assert len(chapters) >= 14
    assert [p for nb in chapters for p in colab_cells.problems(nb, url, ref)] == []
    for nb in chapters:
        boot = "".join(json.loads(nb.read_text())["cells"][1]["source"])
        assert f'"--branch", "{ref}", "{url}"' in boot and "pip" in boot


def test_a_chapter_that_drifts_is_found_and_rewritten(tmp_path):
    url, ref = colab_cells.pinned()
    copy = tmp_path / "05_multi_loss.ipynb"
    shutil.copy(ROOT / "book" / "05_multi_loss.ipynb", copy)
    copy.write_text(copy.read_text().replace(f"--branch\\\", \\\"{ref}", "--branch\\\", \\\"main")
                    .replace(f"blob/{ref}/", "blob/main/"))
    assert colab_cells.problems(copy, url, ref) == [
        f"05_multi_loss.ipynb: the Colab badge does not open {ref} of {url}",
        f"05_multi_loss.ipynb: the Colab bootstrap does not install {ref} of {url}"]
    colab_cells.problems(copy, url, ref, write=True)
    assert colab_cells.problems(copy, url, ref) == []
    assert copy.read_text() == (ROOT / "book" / "05_multi_loss.ipynb").read_text()
