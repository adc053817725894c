"""The package's shape: an acyclic import graph that respects the layers, no mmbal import hidden
inside a function, nothing of data_scripts, and a size a reader can take in."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mmbal"
# 3,500 lines held every feature of the code base when the architecture was settled; the fidelity
# options of the baselines, four later baselines (MMPareto, ReconBoost, D&R, G-Blending) and resumable,
# data-parallel, mixed-precision training were then budgeted ~1,000 more lines between them.
MAX_LINES = 4500
# (importer prefix, forbidden import prefixes): the layers of ARCHITECTURE.md
FORBIDDEN = [
    ("mmbal.data", ("mmbal.models", "mmbal.objectives", "mmbal.balancers", "mmbal.train", "mmbal.experiments")),
    ("mmbal.models", ("mmbal.objectives", "mmbal.balancers", "mmbal.train", "mmbal.experiments")),
    ("mmbal.balancers", ("mmbal.train", "mmbal.experiments", "mmbal.regimes", "mmbal.sweep")),
    ("mmbal.train", ("mmbal.experiments", "mmbal.regimes", "mmbal.presets", "mmbal.sweep", "mmbal.tables")),
    ("mmbal", ("data_scripts",)),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(imported module, imported at module level?) for every import statement."""
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(f"{node.module}.{alias.name}", id(node) in top) for alias in node.names]
    return out


def graph() -> dict[str, list[tuple[str, bool]]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = []
        for target, top_level in imports(ast.parse(path.read_text())):
            while target and target not in modules and not target.startswith("data_scripts"):
                target = target.rpartition(".")[0]           # mmbal.models.build_model -> mmbal.models
            if target:
                targets.append((target, top_level))
        edges[name] = targets
    return edges


def test_the_graph_sees_every_module_and_its_imports():
    edges = graph()
    assert {"mmbal.train", "mmbal.experiments", "mmbal.balancers.mlb", "mmbal.data.base"} <= set(edges)
    assert ("mmbal.train", True) in edges["mmbal.experiments"]


def test_no_import_cycle():
    edges = {m: {t for t, _ in ts if t.startswith("mmbal") and t != m} for m, ts in graph().items()}
    state: dict[str, int] = {}                             # 1: on the current path, 2: finished

    def visit(m, path):
        state[m] = 1
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(path + [t]))
            if state.get(t) is None:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("importer, forbidden", FORBIDDEN)
def test_layers_have_no_back_edges(importer, forbidden):
    bad = [f"{m} imports {t}" for m, ts in graph().items() if m == importer or m.startswith(importer + ".")
           for t, _ in ts if t.startswith(forbidden)]
    assert not bad, bad


def test_no_mmbal_import_inside_a_function():
    hidden = [f"{m} imports {t} inside a function" for m, ts in graph().items()
              for t, top in ts if not top and t.startswith("mmbal")]
    assert not hidden, hidden


def test_package_size():
    lines = sum(len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py"))
    assert lines <= MAX_LINES, f"mmbal/ has {lines} lines of Python (limit {MAX_LINES})"
