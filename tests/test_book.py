"""The book builds offline with warnings as errors, executing every chapter (FAST mode)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from bs4 import BeautifulSoup

from mmbal.tables import format_pm, read_summary, summary_path

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


def test_every_notebook_cell_has_an_id():
    """nbformat 4.5 cells carry an id; a cell added without one draws a MissingIDFieldWarning in every build."""
    for nb_path in sorted((ROOT / "book").rglob("*.ipynb")):
        if "_build" in nb_path.parts:
            continue
        nb = json.loads(nb_path.read_text())
        ids = [c.get("id") for c in nb["cells"]]
        assert None not in ids and len(set(ids)) == len(ids), f"{nb_path.name}: cells without a unique id"


def html_problems(html: Path) -> list[str]:
    """What a reader would trip on in a built book: a relative link or image whose file is missing,
    an error traceback in a page, or a table cell that reads "nan"."""
    problems = []
    for page in sorted(html.rglob("*.html")):
        name = page.relative_to(html)
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        targets = [("link", a.get("href")) for a in soup.find_all("a")] + \
                  [("image", img.get("src")) for img in soup.find_all("img")]
        for kind, target in targets:
            path = (target or "").split("#")[0].split("?")[0]
            if path and not re.match(r"^[a-z][a-z0-9+.-]*:", path) and not (page.parent / path).exists():
                problems.append(f"{name}: broken {kind} {target}")
        if "Traceback (most recent call last)" in soup.get_text():
            problems.append(f"{name}: an error traceback")
        problems += [f"{name}: a table cell reads {cell.get_text(strip=True)!r}"
                     for cell in soup.find_all(["td", "th"]) if cell.get_text(strip=True).lower() == "nan"]
    return problems


def test_html_problems_finds_broken_links_images_tracebacks_and_nan(tmp_path):
    (tmp_path / "ok.html").write_text('<a href="ok.html#top">self</a><a href="https://x.org/a">web</a>'
                                      '<table><tr><td>0.5</td><td>nanometre</td></tr></table>')
    assert html_problems(tmp_path) == []
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.html").write_text('<a href="../missing.html">x</a><img src="_images/gone.png">'
                                               '<pre>Traceback (most recent call last):</pre>'
                                               '<table><tr><td> NaN </td></tr></table>')
    assert html_problems(tmp_path) == ["sub/bad.html: broken link ../missing.html",
                                       "sub/bad.html: broken image _images/gone.png",
                                       "sub/bad.html: an error traceback",
                                       "sub/bad.html: a table cell reads 'NaN'"]


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
    assert not html_problems(html), html_problems(html)
    bibliography = (html / "book" / "bibliography.html").read_text()
    assert "improving multimodal learning with multi-loss gradient modulation" in bibliography.lower()
    assert 'href="bibliography.html#id' in (html / "book" / "intro.html").read_text(), "intro cites nothing"
    summary = read_summary(summary_path(ROOT / "book" / "results", "digits_av_v2")).set_index(["method", "fusion"])
    mlb = summary.loc[("mlb", "concat")]
    assert format_pm(mlb.test_accuracy_mean, mlb.test_accuracy_std) in (html / "book" / "intro.html").read_text(), \
        "the landing page does not show MLB's committed Digits-AV accuracy"
