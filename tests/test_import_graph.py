"""Import graph: no circle inside a package, and the arrows point down.

The graph is read from the source with ``ast`` (nothing is imported). Every import of a
``refusion.*`` module is an edge, whether at module level or inside a function: an import
hidden in a function is still a circle, it only fails later. Imports of other packages'
modules inside functions are how heavy or upward pieces are reached lazily; those are only
checked by the direction rule below.

Direction (STYLE.md rule 1): benchmarks -> export -> train -> runtime. A module may import
its own package and the packages below it at module level; an import that reaches *up*
is allowed only inside a function and only when listed in ``KNOWN_LAZY_UP`` with its reason.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Top-level folder -> package name, lowest layer first (setup.cfg's package_dir).
PACKAGES = {"runtime": "refusion.runtime", "train": "refusion.train", "export": "refusion.export",
            "benchmarks": "refusion.benchmarks"}
LAYER = {name: i for i, name in enumerate(PACKAGES.values())}

#: Circles known and tolerated for now, as sets of modules.
KNOWN_CYCLES: dict[frozenset[str], str] = {
}

#: Lazy imports that reach up a layer: (importer, imported) -> why.
KNOWN_LAZY_UP: dict[tuple[str, str], str] = {
    ("refusion.runtime.backends.torch_backend", "refusion.train.checkpoint"):
        "--backend torch runs a checkpoint; F and the checkpoint formats live in train (see its docstring)",
}


@dataclass(frozen=True)
class Edge:
    src: str  # importing module
    dst: str  # imported refusion module (a package's __init__ when the name is not a module)
    lazy: bool  # inside a function or lambda
    line: int

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst} ({'in a function' if self.lazy else 'module level'}, line {self.line})"


def find_modules(root: Path, packages: dict[str, str]) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is_package) for every .py file inside a folder with an __init__.py."""
    mods: dict[str, tuple[Path, bool]] = {}
    for folder, pkg in packages.items():
        base = root / folder
        for f in sorted(base.rglob("*.py")):
            if not (f.parent / "__init__.py").exists() or ".venv" in f.parts:
                continue
            parts = list(f.relative_to(base).with_suffix("").parts)
            if any(not (base / Path(*parts[:i]) / "__init__.py").exists() for i in range(1, len(parts))):
                continue  # below a folder that is no package
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            mods[".".join([pkg, *parts])] = (f, is_pkg)
    return mods


def _known(name: str, mods: dict) -> str:
    """The nearest module at or above ``name`` (``pkg.mod.func`` -> ``pkg.mod``)."""
    while name not in mods and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def find_edges(mods: dict[str, tuple[Path, bool]]) -> list[Edge]:
    edges: list[Edge] = []
    for name, (path, is_pkg) in mods.items():
        here = name if is_pkg else name.rsplit(".", 1)[0]

        def visit(node: ast.AST, lazy: bool, name: str = name, here: str = here) -> None:
            for child in ast.iter_child_nodes(node):
                inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = here.split(".")[: len(here.split(".")) - (child.level - 1)]
                        origin = ".".join(base + ([child.module] if child.module else []))
                    else:
                        origin = child.module or ""
                    targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in mods else origin for a in child.names]
                for t in targets:
                    if t.startswith("refusion.") and _known(t, mods) in mods:
                        edges.append(Edge(name, _known(t, mods), inner, child.lineno))
                visit(child, inner)

        visit(ast.parse(path.read_text(), str(path)), False)
    return edges


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def cycles(edges: list[Edge]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (or a module importing itself)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the graph is a few hundred edges deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return find_edges(find_modules(ROOT, PACKAGES))


# -- smoke: the reader sees the edges we know are there -------------------------
def test_graph_reads_module_level_and_function_level_imports(edges):
    pairs = {(e.src, e.dst, e.lazy) for e in edges}
    assert ("refusion.runtime.pipeline", "refusion.runtime.sources", False) in pairs  # from .sources import (...)
    assert ("refusion.runtime.backends", "refusion.runtime.backends.base", False) in pairs  # from .base import
    assert ("refusion.runtime.backends.torch_backend", "refusion.train.checkpoint", True) in pairs
    assert len({package_of(e.src) for e in edges}) == len(PACKAGES)


def test_a_circle_hidden_in_a_function_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from .a import x\n    return x\n")
    (pkg / "c.py").write_text("from refusion.pkg import a\nimport refusion.pkg.b\n")
    found = find_edges(find_modules(tmp_path, {"pkg": "refusion.pkg"}))
    assert {(e.src, e.dst, e.lazy) for e in found} == {
        ("refusion.pkg.a", "refusion.pkg.b", False),
        ("refusion.pkg.b", "refusion.pkg.a", True),
        ("refusion.pkg.c", "refusion.pkg.a", False),
        ("refusion.pkg.c", "refusion.pkg.b", False),
    }
    assert cycles(found) == [frozenset({"refusion.pkg.a", "refusion.pkg.b"})]


# -- the rules ------------------------------------------------------------------
def test_no_import_circle_inside_a_package(edges):
    inside = [e for e in edges if package_of(e.src) == package_of(e.dst)]
    bad = []
    for comp in cycles(inside):
        if comp in KNOWN_CYCLES:
            continue
        links = [str(e) for e in inside if e.src in comp and e.dst in comp]
        bad.append(" <-> ".join(sorted(comp)) + ":\n    " + "\n    ".join(links))
    assert not bad, "import circles (move the shared piece to where it belongs):\n" + "\n".join(bad)


def test_no_import_circle_across_packages(edges):
    assert [c for c in cycles(edges) if c not in KNOWN_CYCLES] == []


def test_arrows_point_down(edges):
    up = [e for e in edges if LAYER[package_of(e.dst)] > LAYER[package_of(e.src)]]
    module_level = [str(e) for e in up if not e.lazy]
    assert not module_level, "module-level imports that reach up a layer:\n" + "\n".join(module_level)
    unlisted = [str(e) for e in up if (e.src, e.dst) not in KNOWN_LAZY_UP]
    assert not unlisted, ("lazy imports that reach up a layer, not in KNOWN_LAZY_UP (add the reason there, "
                          "or move the piece down):\n" + "\n".join(unlisted))


def test_known_exceptions_are_still_needed(edges):
    """When an exception is fixed, its entry goes too, so the lists stay the truth."""
    inside = [e for e in edges if package_of(e.src) == package_of(e.dst)]
    present = set(cycles(inside))
    assert [sorted(c) for c in KNOWN_CYCLES if c not in present] == []
    lazy_up = {(e.src, e.dst) for e in edges if e.lazy}
    assert [k for k in KNOWN_LAZY_UP if k not in lazy_up] == []
