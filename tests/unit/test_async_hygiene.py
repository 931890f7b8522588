"""Async hazards the tools do not catch yet, checked over the source tree."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "sandcastle"


def test_no_module_uses_asyncio_wait_for() -> None:
    """``asyncio.wait_for`` can lose a cancellation on Python 3.11 (it once hung the server's
    shutdown); ``async with asyncio.timeout(...)`` cannot."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            uses = (
                isinstance(node, ast.Attribute)
                and node.attr == "wait_for"
                and isinstance(node.value, ast.Name)
                and node.value.id == "asyncio"
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "asyncio"
                and any(alias.name == "wait_for" for alias in node.names)
            )
            if uses:
                found.append(f"{path.relative_to(SRC)}:{getattr(node, 'lineno', '?')}")
    assert found == []
    assert len(list(SRC.rglob("*.py"))) > 50  # the tree was really read
