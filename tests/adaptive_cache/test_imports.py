"""The engine's modules import each other without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import adaptive_cache

ROOT = Path(adaptive_cache.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, function bodies included (a lazy import is still a dependency),
    except under ``if TYPE_CHECKING:``."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports, at import time or later."""
    out = set()
    for node in _nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import mod`` needs pkg.mod; ``from pkg import name`` needs pkg.
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [m for m in subs if m in modules]
            if len(names) < len(subs):
                names.append(node.module)
        else:
            continue
        out.update(n for n in names if n in modules)
    return out


def test_no_import_cycle_in_the_package():
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = {m: _imports(p, set(files)) for m, p in files.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] if dep in path else path
                raise AssertionError(f"import cycle: {' -> '.join([*cycle, dep])}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_loader_does_not_import_the_engine():
    deps = _imports(ROOT / "loader.py", {"adaptive_cache.engine", "adaptive_cache.engine.cache"})
    assert not deps
