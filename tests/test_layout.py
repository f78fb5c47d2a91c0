"""The package's shape: stages that import only downward (no cycles), and every subpackage installed by a plain
`pip install .` (pyproject lists each one)."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The path of a run, bottom to top; a module may import its own stage and those below, never one above. Names in
# one tuple share a rank and do not import each other.
STAGES = [("errors", "malloc"), ("files", "registry", "config", "seeds"), ("data",), ("learners", "metrics"),
          ("measure",), ("runs",), ("suites",), ("report",), ("testing", "ui"), ("cli",)]
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}


def modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "repbench").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known) -> set[str]:
    """The repbench modules `name` imports, at any depth (inside functions too)."""
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [f"{target}.{a.name}" for a in node.names]
            found |= {t for t in names if t in known}
            # `from .. import seeds` imports a module, not the package's face; __version__ is set first thing in
            # repbench/__init__.py, before any import
            if target in known and not all(t in known for t in names) and \
                    (target, [a.name for a in node.names]) != ("repbench", ["__version__"]):
                found.add(target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
    return found - {name}


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def stage(module: str) -> str:
    return module.split(".")[1]


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != "repbench"))
def test_a_module_imports_only_its_own_stage_and_those_below(module):
    assert stage(module) in RANK, f"{module} belongs to no stage: add it to STAGES"
    above = [t for t in GRAPH[module] if t == "repbench" or (stage(t) != stage(module)
                                                              and RANK[stage(t)] >= RANK[stage(module)])]
    assert not above, f"{module} imports {above}, at or above its stage ({stage(module)})"


def test_no_import_cycles():
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in GRAPH.items()}
    done, path, cycles = set(), [], []

    def visit(m):
        if m in path:
            cycles.append(path[path.index(m):] + [m])
            return
        if m in done:
            return
        path.append(m)
        for t in sorted(graph[m]):
            visit(t)
        path.pop()
        done.add(m)
    for m in sorted(graph):
        visit(m)
    assert not cycles, f"import cycles: {cycles}"


def test_pyproject_lists_every_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "repbench").rglob("__init__.py")}
    assert found, "no package found under repbench/"
    assert found <= listed, f"packages missing from pyproject.toml's [tool.setuptools] packages: {found - listed}"
    assert "repbench_models" in listed
