"""The built-in templates: Dockerfiles shipped in ``dockerfiles/``, built like anyone's."""

from __future__ import annotations

from pathlib import Path

from sandcastle.runtime.templates.from_dockerfile import recipe_from_dockerfile
from sandcastle.runtime.templates.recipes import Recipe

DOCKERFILES = Path(__file__).parent / "dockerfiles"
_SUFFIX = ".Dockerfile"


def builtin_names() -> list[str]:
    return sorted(p.name.removesuffix(_SUFFIX) for p in DOCKERFILES.glob(f"*{_SUFFIX}"))


def builtin_recipe(name: str) -> Recipe:
    """The recipe of built-in template ``name``; ``KeyError`` for a name that is none."""
    path = DOCKERFILES / f"{name}{_SUFFIX}"
    if name not in builtin_names():
        known = ", ".join(builtin_names())
        raise KeyError(f"unknown template {name!r}; known: {known}") from None
    # A built-in Dockerfile starts FROM Debian: no template of the server is looked up.
    return recipe_from_dockerfile(name, path.read_text(), None, DOCKERFILES)
