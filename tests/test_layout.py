"""The package layout: imports run one way, from the wiring down to the settings.

Every project module is read as source (``ast``, nothing imported), and every import in it is
checked against ``LAYERS``, imports inside functions and methods included: a package may import
only packages on a lower layer, so no cycle between packages can form. ``docs/architecture.md``
draws the same table. ``tests/``, ``bench/``, ``scripts/`` and migrations are left out: they sit
above everything and may import anything.

``python -m tests.test_layout`` prints the import graph between packages.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A package may import only packages on a strictly lower layer (and third-party
# code); two packages on one layer import neither each other.
LAYERS: dict[str, int] = {
    "settings": 0,  # configuration from the environment
    "catalog_client": 1,  # the HTTP client for course-discovery: requests and stdlib only
    "standin": 1,  # the stand-in catalog: stdlib only
    "observability": 1,  # metrics, log context, Celery signal hooks: prometheus_client, Celery, settings
    "overviews": 2,  # the LMS side: overviews, records, keys, the course_published signal
    "enrollments": 3,  # enrollments of users in overviews
    "catalog": 4,  # the sync core
    "celeryconfig": 5,  # queues, routes, limits, retry policy, beat schedule
    "tasks": 6,  # thin Celery tasks
    "signals": 7,  # receivers of course_published
    "api": 8,  # the HTTP API
    "ops": 8,  # the admin and the commands that enqueue
    "urls": 9,  # wiring
    "wsgi": 9,
    "gunicorn.conf": 9,  # gunicorn's configuration (its conventional file name)
    "manage": 9,
}

# Not project code for this rule: they may import anything (and nothing imports them).
OUTSIDE = {"tests", "bench", "scripts", "var", "docs"}


def project_modules() -> set[str]:
    """Top-level project names: packages (a directory with ``__init__.py``) and modules."""
    names = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    names |= {p.stem for p in ROOT.glob("*.py")}
    return {n for n in names if not n.startswith(".") and n not in OUTSIDE}


def source_files() -> Iterator[Path]:
    for name in sorted(project_modules()):
        if (ROOT / f"{name}.py").is_file():
            yield ROOT / f"{name}.py"
        else:
            for path in sorted((ROOT / name).rglob("*.py")):
                if "migrations" not in path.relative_to(ROOT).parts:
                    yield path


def imported_modules(path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file (or in ``source``, read as that
    file), at any depth: functions, methods, ``if`` and ``try`` blocks. A relative import names the
    file's own package."""
    if source is None:
        source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    package = package_of(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, package
            elif node.module:
                yield node.lineno, node.module


def package_of(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def import_graph() -> dict[str, dict[str, list[str]]]:
    """importer package -> imported project package -> ["file:line", ...] (self-imports left out)."""
    project = project_modules()
    graph: dict[str, dict[str, list[str]]] = {}
    for path in source_files():
        importer = package_of(path)
        graph.setdefault(importer, {})
        for line, module in imported_modules(path):
            imported = module.split(".")[0]
            if imported in project and imported != importer:
                where = f"{path.relative_to(ROOT)}:{line}"
                graph[importer].setdefault(imported, []).append(where)
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle between packages (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_project_package_has_a_layer():
    missing = sorted(project_modules() - LAYERS.keys())
    assert not missing, f"add these top-level packages to LAYERS (and to docs/architecture.md): {missing}"


def test_imports_run_one_way_down_the_layers():
    wrong = [
        f"{where}: {importer} (layer {LAYERS[importer]}) imports {imported} (layer {LAYERS[imported]})"
        for importer, targets in import_graph().items()
        for imported, places in targets.items()
        if LAYERS[imported] >= LAYERS[importer]
        for where in places
    ]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycle_between_packages():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])


def test_find_cycle_sees_a_cycle():
    """The cycle check itself can fail: a ring through three packages is found."""
    graph = {"a": {"b": ["x"]}, "b": {"c": ["x"]}, "c": {"a": ["x"]}, "d": {"a": ["x"]}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ["x"]}, "b": {}}) is None


def test_imports_inside_functions_and_relative_imports_are_read():
    source = (
        "import os\n\n"
        "def f():\n    if True:\n        from tasks.refresh import request_refresh\n\n"
        "class C:\n    def m(self):\n        import api.views\n\n"
        "from . import mapping\n"
    )
    found = sorted(imported_modules(ROOT / "catalog" / "sweep.py", source))
    assert found == [(1, "os"), (5, "tasks.refresh"), (9, "api.views"), (11, "catalog")]


def test_catalog_client_imports_no_django_and_nothing_of_the_project():
    project = project_modules() - {"catalog_client"}
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in (ROOT / "catalog_client").rglob("*.py")
        for line, module in imported_modules(path)
        if module.split(".")[0] == "django" or module.split(".")[0] in project
    ]
    assert not wrong, "catalog_client must stay requests + stdlib:\n" + "\n".join(wrong)


def format_graph(graph: dict[str, dict[str, list[str]]]) -> str:
    lines = []
    for importer in sorted(graph, key=lambda p: (-LAYERS.get(p, -1), p)):
        targets = sorted(graph[importer], key=lambda p: (-LAYERS.get(p, -1), p))
        lines.append(f"{LAYERS.get(importer, '?')} {importer:<15} -> {', '.join(targets) or '(nothing)'}")
    return "\n".join(lines)


if __name__ == "__main__":
    graph = import_graph()
    print(format_graph(graph))
    cycle = find_cycle(graph)
    print("cycle: " + " -> ".join(cycle) if cycle else "no cycle")
    sys.exit(1 if cycle else 0)
