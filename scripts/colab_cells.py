"""Write (or check) every chapter's Colab cells from one place.

The repository URL comes from `_config.yml` (`repository.url`) and the pinned revision is the
release tag `v<version>` of `pyproject.toml`: the badge opens that revision of the chapter, and the
hidden first code cell shallow-clones that tag (package, book helpers and committed results) and
installs the package from it, keeping Colab's own PyTorch.

    python scripts/colab_cells.py           # check: exit 1 and list the chapters that differ
    python scripts/colab_cells.py --write   # rewrite the badge line and the bootstrap cell
"""
import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BADGE = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)\n?$")


def pinned() -> tuple[str, str]:
    """(repository URL, release tag) the Colab cells use."""
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return url, f"v{version}"


def badge_line(notebook: Path, url: str, ref: str) -> str:
    repo = url.removeprefix("https://github.com/")
    return (f"[![Open In Colab](images/colab-badge.svg)](https://colab.research.google.com/github/{repo}/blob/"
            f"{ref}/book/{notebook.name})")


def bootstrap_source(url: str, ref: str) -> str:
    return f'''import os, subprocess, sys
if "google.colab" in sys.modules:  # Colab only: release {ref} of the book's repository (package, book helpers, committed results)
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "{ref}", "{url}", "/content/mmbal"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "/content/mmbal"], check=True)  # keeps Colab's torch
    os.chdir("/content/mmbal/book")
    sys.path.insert(0, "/content/mmbal/book")'''


def chapters() -> list[Path]:
    return sorted((ROOT / "book").glob("[0-9]*.ipynb"))


def problems(notebook: Path, url: str, ref: str, *, write: bool = False) -> list[str]:
    """How the notebook's Colab cells differ from the pinned ones (rewritten in place with ``write``)."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    out = []
    lines = nb["cells"][0]["source"]
    hits = [i for i, line in enumerate(lines) if BADGE.match(line)]
    if len(hits) != 1:
        out.append(f"{notebook.name}: the first cell has {len(hits)} Colab badge lines (expected 1)")
    elif lines[hits[0]].rstrip("\n") != badge_line(notebook, url, ref):
        out.append(f"{notebook.name}: the Colab badge does not open {ref} of {url}")
        lines[hits[0]] = badge_line(notebook, url, ref) + ("\n" if lines[hits[0]].endswith("\n") else "")
    boot = nb["cells"][1]
    if "google.colab" not in "".join(boot["source"]) or boot["cell_type"] != "code":
        out.append(f"{notebook.name}: the second cell is not the Colab bootstrap")
    elif "".join(boot["source"]) != bootstrap_source(url, ref):
        out.append(f"{notebook.name}: the Colab bootstrap does not install {ref} of {url}")
        boot["source"] = bootstrap_source(url, ref).splitlines(keepends=True)
    if write and out:
        notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    write = "--write" in sys.argv[1:]
    url, ref = pinned()
    found = [p for nb in chapters() for p in problems(nb, url, ref, write=write)]
    print("\n".join(found) or f"every chapter's Colab cells use {ref} of {url}")
    sys.exit(1 if found and not write else 0)
