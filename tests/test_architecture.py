"""The layers of ``src/photosphere``: imports point one way, nothing imports the CLI.

The import graph is read statically with :mod:`ast`, every ``import`` statement counted, at module
level and inside functions alike (a function-level import still ties two layers together, it only
hides the tie until the function runs). A node is a subpackage (``io``, ``ops``, ``grids``,
``models``, ``infer``, ``nn``, ``cli``, ``workflows``, ``reports``, ``datasets``) or a top-level
module (``spectrum``, ``errors``, ...); ``photosphere`` itself is the public API
(``photosphere/__init__.py``), which may import anything and which nothing in the library imports.

Run ``python tests/test_architecture.py`` to print the graph (pasted into docs/architecture.md).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "photosphere"
#: The node of the public API (``photosphere/__init__.py``).
ROOT = PACKAGE


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names ``node`` imports from ``module`` (``from . import x`` gives ``pkg.x``)."""
    if node.level == 0:
        base = node.module or ""
    else:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _node_of(name: str, modules: set[str]) -> str | None:
    """The graph node of an absolute module name, or ``None`` outside the package.

    ``photosphere.infer.chain`` -> ``infer``; ``photosphere.spectrum.Spectrum`` -> ``spectrum``;
    ``photosphere.__version__`` -> ``photosphere`` (the public API).
    """
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1:
        return ROOT
    if f"{PACKAGE}.{parts[1]}" in modules:
        return parts[1]
    return ROOT


def import_edges(src: Path = SRC) -> dict[tuple[str, str], list[str]]:
    """``{(importer node, imported node): ["file.py:line", ...]}`` over every import statement."""
    files = sorted((src / PACKAGE).rglob("*.py"))
    modules = {_module_name(f, src) for f in files}
    edges: dict[tuple[str, str], list[str]] = {}
    for path in files:
        module = _module_name(path, src)
        source = _node_of(module, modules)
        tree = ast.parse(path.read_text(), filename=str(path))
        for stmt in ast.walk(tree):
            if isinstance(stmt, ast.Import):
                names = [alias.name for alias in stmt.names]
            elif isinstance(stmt, ast.ImportFrom):
                names = _resolve(module, path.name == "__init__.py", stmt)
                # ``from photosphere import spectrum`` names a module, not the public API
                if stmt.level == 0 or names[0] == PACKAGE:
                    names = names[1:] if names[0] == PACKAGE else names
            else:
                continue
            targets = {_node_of(n, modules) for n in names} - {None, source}
            for target in targets:
                where = f"{path.relative_to(src / PACKAGE)}:{stmt.lineno}"
                edges.setdefault((source, target), []).append(where)  # type: ignore[arg-type]
    return edges


def graph(edges: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, b in edges:
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set())
    return out


def cycles(adjacency: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(adjacency[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(adjacency):
        if v not in index:
            visit(v)
    return found


def layers(adjacency: dict[str, set[str]]) -> list[list[str]]:
    """Nodes by level: level 0 imports nothing in the package, level k only levels below k."""
    level: dict[str, int] = {}

    def depth(v: str) -> int:
        if v not in level:
            level[v] = -1  # guards a cycle (the test reports those)
            level[v] = 1 + max((depth(w) for w in adjacency[v]), default=-1)
        return level[v]

    for v in adjacency:
        depth(v)
    out: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for v, k in level.items():
        out[k].append(v)
    return [sorted(row) for row in out]


def render(edges: dict[tuple[str, str], list[str]]) -> str:
    """The graph as text: one line per node, the layer it sits in and what it imports."""
    adjacency = graph(edges)
    lines = []
    for k, row in enumerate(layers(adjacency)):
        for v in row:
            targets = ", ".join(sorted(adjacency[v])) or "-"
            lines.append(f"L{k}  {v:<12} -> {targets}")
    return "\n".join(lines)


def _explain(component: list[str], edges: dict[tuple[str, str], list[str]]) -> str:
    inside = [(a, b) for (a, b) in edges if a in component and b in component]
    return "; ".join(f"{a} -> {b} ({', '.join(edges[(a, b)][:3])})" for a, b in sorted(inside))


def test_the_graph_is_read_from_every_kind_of_import(tmp_path):
    package = tmp_path / PACKAGE
    (package / "io").mkdir(parents=True)
    (package / "infer").mkdir()
    (package / "__init__.py").write_text("from .io import read\n")
    (package / "errors.py").write_text("")
    (package / "io" / "__init__.py").write_text("from .reader import read\n")
    (package / "io" / "reader.py").write_text(
        "from ..errors import X\n\ndef read():\n    from ..infer import fit\n")
    (package / "infer" / "__init__.py").write_text(
        "import photosphere.io.reader\nfrom photosphere import errors\n")
    edges = import_edges(tmp_path)
    assert set(edges) == {(ROOT, "io"), ("io", "errors"), ("io", "infer"), ("infer", "io"),
                          ("infer", "errors")}
    assert edges[("io", "infer")] == ["io/reader.py:4"]
    assert cycles(graph(edges)) == [["infer", "io"]]


def test_no_import_cycles_between_subpackages():
    edges = import_edges()
    found = cycles(graph(edges))
    assert not found, "import cycles: " + " | ".join(_explain(c, edges) for c in found)


def test_nothing_in_the_library_imports_the_cli_or_the_public_api():
    edges = import_edges()
    offenders = {(a, b): w for (a, b), w in edges.items()
                 if (b == "cli" and a != ROOT) or (b == ROOT and a != "cli")}
    assert not offenders, f"imports of cli or of photosphere/__init__.py: {offenders}"


def test_models_and_grids_know_nothing_of_inference():
    edges = import_edges()
    for lower in ("io", "ops", "grids", "models", "spectrum", "errors", "model"):
        for upper in ("infer", "nn", "workflows", "reports", "cli"):
            assert (lower, upper) not in edges, (
                f"{lower} imports {upper}: {edges.get((lower, upper))}")


#: The one loop, and the one RV scan (of the chain's RVs, the labels held).
LM_LOOP = "ops/levenberg_marquardt.py"
RV_SCAN = "infer/optimize.py"
#: Other χ² scans with RV in their name that are not the star's RV: the binary's ``delta_rv``
#: is a label of the two-component model, scanned through the likelihood.
OTHER_SCANS = {"infer/mixture.py": ["_delta_rv_scan"]}


def _functions(src: Path):
    """``(path relative to the package, FunctionDef)`` of every function in the package."""
    for path in sorted((src / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield str(path.relative_to(src / PACKAGE)), node


def _calls(node: ast.AST) -> set[str]:
    return {c.func.id if isinstance(c.func, ast.Name) else getattr(c.func, "attr", "")
            for c in ast.walk(node) if isinstance(c, ast.Call)}


def own_lm_loops(src: Path = SRC) -> dict[str, list[str]]:
    """Functions named after Levenberg–Marquardt that neither are the one loop nor call it."""
    out: dict[str, list[str]] = {}
    for where, node in _functions(src):
        if (where != LM_LOOP and "marquardt" in node.name.lower()
                and "minimise" not in _calls(node)):
            out.setdefault(where, []).append(node.name)
    return out


def rv_scans(src: Path = SRC) -> dict[str, list[str]]:
    """Functions named like an RV scan (``*rv_scan*``, ``*scan_rv*``) and where they are."""
    out: dict[str, list[str]] = {}
    for where, node in _functions(src):
        if "rv_scan" in node.name or "scan_rv" in node.name:
            out.setdefault(where, []).append(node.name)
    return out


def test_the_solver_checks_see_a_loop_of_its_own(tmp_path):
    package = tmp_path / PACKAGE / "models"
    package.mkdir(parents=True)
    (package / "a.py").write_text(
        "def levenberg_marquardt(x):\n    return minimise(x)\n\n"
        "def _my_levenberg_marquardt(x):\n    while x:\n        x -= 1\n\n"
        "def scan_rv(x):\n    return x\n")
    assert own_lm_loops(tmp_path) == {"models/a.py": ["_my_levenberg_marquardt"]}
    assert rv_scans(tmp_path) == {"models/a.py": ["scan_rv"]}


def test_one_levenberg_marquardt_loop_and_one_rv_scan():
    loops = own_lm_loops()
    assert not loops, (
        f"Levenberg–Marquardt loops of their own: {loops}; make the problem a "
        f"photosphere.ops.levenberg_marquardt.minimise problem instead")
    scans = {k: v for k, v in rv_scans().items() if OTHER_SCANS.get(k) != v}
    assert set(scans) == {RV_SCAN}, (
        f"RV scans outside {RV_SCAN}: {scans}; use photosphere.infer.optimize.rv_scan")


if __name__ == "__main__":
    sys.stdout.write(render(import_edges()) + "\n")
