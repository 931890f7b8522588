"""The package layers of ``docs/ARCHITECTURE.md``, checked on the source: every import counts,
``TYPE_CHECKING`` ones included, and no two modules import each other, however indirectly."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

#: What each package must not import (``docs/ARCHITECTURE.md``, "Packages").
FORBIDDEN = {
    "domain": ("sandcastle.api", "sandcastle.services", "sandcastle.store", "sandcastle.runtime",
               "sandcastle.cli", "fastapi", "starlette", "sqlalchemy"),
    "store": ("sandcastle.api", "sandcastle.services", "sandcastle.runtime", "sandcastle.cli",
              "sandcastle.wiring", "fastapi", "starlette"),
    # Services hold no SQL: every statement is a method of a store (``store/``).
    "services": ("sandcastle.api", "sandcastle.cli", "sandcastle.wiring", "fastapi",
                 "starlette", "sqlalchemy"),
    "runtime": ("sandcastle.api", "sandcastle.services", "sandcastle.store", "sandcastle.cli",
                "fastapi", "starlette", "sqlalchemy"),
    # The composition root builds services for the server, the CLI and the benches alike.
    "wiring": ("sandcastle.api", "sandcastle.cli", "fastapi", "starlette"),
    # E2B's surface is another HTTP layer over the same services (docs/E2B.md).
    "e2b": ("sandcastle.store", "sandcastle.runtime", "sandcastle.cli", "sqlalchemy"),
    # So is Leap0's (docs/LEAP0.md).
    "leap0": ("sandcastle.store", "sandcastle.runtime", "sandcastle.cli", "sqlalchemy"),
}  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "sandcastle").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> Iterator[str]:
    """Every absolute module name ``path`` imports, and ``module.name`` for ``from`` imports."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_package_imports_what_its_layer_forbids() -> None:
    broken = []
    for name, path in modules().items():
        parts = name.split(".")
        package = parts[1] if len(parts) >= 2 else None
        for imported in imports(path):
            if package == "agent":
                # It runs inside the sandbox with only the agent's environment.
                if imported.startswith("sandcastle.") and not imported.startswith(
                    "sandcastle.agent"
                ):
                    broken.append(f"{name} imports {imported}")
            elif package in FORBIDDEN and any(
                imported == banned or imported.startswith(banned + ".")
                for banned in FORBIDDEN[package]
            ):
                broken.append(f"{name} imports {imported}")
    assert broken == []


def test_no_module_takes_part_in_an_import_cycle() -> None:
    known = modules()
    graph = {
        name: {i for i in imports(path) if i in known and i != name} for name, path in known.items()
    }
    cycles = []
    for start in graph:
        # A path back to ``start``: depth-first over what it imports.
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert cycles == []
