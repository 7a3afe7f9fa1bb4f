"""No import cycle inside ferricflowd/: the module graph of module-level imports is acyclic.

import-linter checks the direction between packages (cli -> supervisor -> worker -> flow);
this checks every module against every other, inside a package too. An edge is an import
that runs when the module is imported: statements at module level (inside `try` or a plain
`if` too), not those in functions (deferred on purpose, e.g. to keep redis-py out of the
supervisor's start) and not those under `if TYPE_CHECKING:` (annotations only).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ferricflowd"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run at import time; functions and classes are not entered
    (a class body runs, but nobody imports in one here), TYPE_CHECKING blocks are skipped."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(h.body for h in node.handlers)):
                yield from _module_level(block)


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of `known` that `module` imports at import time."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _module_level(ast.parse(source).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            found.add(sub if sub in known else target)  # `from pkg import submodule`
    return {name for name in found if name in known and name != module}


def import_graph(sources: Mapping[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module -> modules it imports, for `sources`: module -> (source text, is_package)."""
    known = set(sources)
    return {m: imports_of(text, m, pkg, known) for m, (text, pkg) in sources.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None when the graph is acyclic (iterative DFS)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def package_sources() -> dict[str, tuple[str, bool]]:
    return {
        module_name(path): (path.read_text("utf-8"), path.name == "__init__.py")
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_ferricflowd_has_no_import_cycle() -> None:
    graph = import_graph(package_sources())
    assert len(graph) > 40 and sum(map(len, graph.values())) > 60  # the walk found the tree
    assert find_cycle(graph) is None


def _sources(**modules: str) -> dict[str, tuple[str, bool]]:
    return {name.replace("__", "."): (text, False) for name, text in modules.items()}


@pytest.mark.parametrize("modules,cycle", [
    (_sources(p__a="from p.b import x", p__b="import p.a"), ["p.a", "p.b", "p.a"]),
    (_sources(p__a="from . import b", p__b="from .c import y", p__c="from .a import z"),
     ["p.a", "p.b", "p.c", "p.a"]),
    (_sources(p__a="try:\n    import p.b\nexcept ImportError:\n    pass", p__b="import p.a"),
     ["p.a", "p.b", "p.a"]),
    (_sources(p__a="import p.b", p__b="from typing import TYPE_CHECKING\n"
                                       "if TYPE_CHECKING:\n    import p.a"), None),
    (_sources(p__a="import p.b", p__b="def f():\n    import p.a"), None),
    (_sources(p__a="import p.b", p__b="import os"), None),
])
def test_the_cycle_check_itself(modules: dict[str, tuple[str, bool]],
                                cycle: list[str] | None) -> None:
    assert find_cycle(import_graph(modules)) == cycle
