"""Write the synchronous face, ``sandcastle_sdk/_sync``, from the asynchronous one.

Every module of ``_async`` but ``_io.py`` (written by hand on both sides) is turned into its
synchronous twin by unasync (``async``/``await`` dropped, ``Async…`` names replaced, see
``REPLACEMENTS``) and formatted with ruff. ``make sdk-sync`` runs it; a test fails when the
committed ``_sync`` differs from what this writes.

    python sdk/python/tools/generate_sync.py [OUTPUT_DIR]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sandcastle_sdk"
REPO = Path(__file__).resolve().parents[3]
HAND_WRITTEN = frozenset({"_io.py"})
HEADER = "# Generated from ../_async/{name} by sdk/python/tools/generate_sync.py: do not edit.\n"

REPLACEMENTS = {
    "AsyncSandcastle": "Sandcastle",
    "AsyncSandbox": "Sandbox",
    "AsyncRunHandle": "RunHandle",
    "AsyncClient": "Client",
    "aclose": "close",
    "aiter_bytes": "iter_bytes",
    "aiter_lines": "iter_lines",
    "aread": "read",
}


def generate(output: Path) -> list[Path]:
    """Write the synchronous modules into ``output``; the paths written."""
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "_async"
        source.mkdir()
        names = sorted(
            p.name for p in (PACKAGE / "_async").glob("*.py") if p.name not in HAND_WRITTEN
        )
        for name in names:
            shutil.copy(PACKAGE / "_async" / name, source / name)
        rule = unasync.Rule("/_async/", "/_sync/", additional_replacements=REPLACEMENTS)
        unasync.unasync_files([str(source / name) for name in names], rules=[rule])
        written = []
        for name in names:
            text = (Path(scratch) / "_sync" / name).read_text()
            target = output / name
            target.write_text(HEADER.format(name=name) + text)
            written.append(target)
    _format(written)
    return written


def _format(paths: list[Path]) -> None:
    config = ["--config", str(REPO / "pyproject.toml")]
    files = [str(p) for p in paths]
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run(
        [*ruff, "check", "--quiet", "--fix", "--select", "I", *config, *files], check=True
    )
    subprocess.run([*ruff, "format", "--quiet", *config, *files], check=True)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE / "_sync")
