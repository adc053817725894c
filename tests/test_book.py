"""The book builds offline with warnings as errors, executing every chapter (FAST mode)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        files += [c["file"] for c in part["chapters"]]
    return files


def test_every_chapter_notebook_is_in_the_toc_and_exists():
    listed = set(toc_files())
    notebooks = {str(p.relative_to(ROOT).with_suffix("")) for p in (ROOT / "book").glob("*.ipynb")}
    assert notebooks <= listed, f"chapters missing from _toc.yml: {sorted(notebooks - listed)}"
    missing = [f for f in listed if not any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml names files that do not exist: {missing}"


def test_book_builds_with_warnings_as_errors(tmp_path):
    jb = Path(sys.executable).with_name("jupyter-book")
    # no MPLBACKEND: the kernel must keep its inline backend, or figures never reach the HTML
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {"MMBAL_FAST": "1"}
    proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(tmp_path), "-W", "-n",
                           "--keep-going"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").exists()
    chapter1 = (html / "book" / "01_modality_imbalance.html").read_text()
    assert len(re.findall(r"<img [^>]*src=\"[^\"]*_images/", chapter1)) >= 3, "chapter 1 lost its figures"
    assert "Traceback" not in chapter1
