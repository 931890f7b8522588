"""Template recipes as data: what goes into each template's root filesystem.

A :class:`Recipe` is a Debian suite, the packages debootstrap adds to ``minbase``, and an ordered
list of steps. The builder executes the steps generically:

- :class:`Run` runs an argv inside the rootfs under bubblewrap (with network, as ``uid``);
- :class:`Write` creates directories and files from the host side (no shell involved);
- :class:`AddUser` adds an account to ``/etc/passwd``, ``group``, ``shadow`` and ``gshadow``;
- :class:`Clean` empties directories (caches) to keep the template small;
- :class:`CopyIn` puts files of a build context (a Dockerfile's ``COPY``) into the rootfs.

A recipe starts from Debian (debootstrap) or, with :attr:`Recipe.base`, from a copy of a built
template (a Dockerfile's ``FROM <template>``).

Paths in steps are absolute paths inside the rootfs. :func:`digest` hashes a recipe's content so
the builder can tell whether a built template is up to date; bump :data:`FORMAT_VERSION` when the
meaning of a step type changes, since that changes results without changing recipe data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sandcastle.agent import layout

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Run:
    """Run ``argv`` inside the rootfs; a non-zero exit fails the build."""

    label: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int = 0
    gid: int = 0
    #: The working directory inside the rootfs.
    cwd: str = "/"


@dataclass(frozen=True)
class Directory:
    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class File:
    path: str
    content: str
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Write:
    """Create ``directories`` (with parents) then write ``files``, replacing existing files."""

    label: str
    directories: tuple[Directory, ...] = ()
    files: tuple[File, ...] = ()


@dataclass(frozen=True)
class AddUser:
    """Add a user and its primary group of the same name; an identical entry is left alone."""

    label: str
    name: str
    uid: int
    gid: int
    home: str
    shell: str = "/bin/bash"


@dataclass(frozen=True)
class Clean:
    """Delete everything inside each directory (keeping the directory); missing ones are fine."""

    label: str
    directories: tuple[str, ...]


@dataclass(frozen=True)
class Placed:
    """One entry of a build context placed at ``path`` in the rootfs: a directory when
    ``sha256`` is empty, else a file copied from the host path ``source`` (whose content
    ``sha256`` is, so a changed file changes the recipe's digest)."""

    source: str
    path: str
    sha256: str
    mode: int
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class CopyIn:
    """Create the directories and copy the files of ``entries``, in order, replacing files."""

    label: str
    entries: tuple[Placed, ...]


@dataclass(frozen=True)
class Chown:
    """Give each of ``paths`` and everything below it to ``uid``:``gid``, as ``chown -R`` does,
    links themselves and never what they lead to."""

    label: str
    paths: tuple[str, ...]
    uid: int
    gid: int


Step = Run | Write | AddUser | Clean | CopyIn | Chown


@dataclass(frozen=True)
class Base:
    """A built template to start from, by the build it had when the recipe was made."""

    name: str
    build_id: str


@dataclass(frozen=True)
class Recipe:
    name: str
    #: Debian suite passed to debootstrap; the mirror comes from the host's apt sources.
    suite: str
    #: ``debootstrap --include`` packages, on top of the ``minbase`` variant.
    packages: tuple[str, ...]
    steps: tuple[Step, ...]
    #: Start from a copy of this template instead of debootstrap (``suite`` and ``packages``
    #: are then unused).
    base: Base | None = None
    #: The environment every process of the template's sandboxes starts with (a Dockerfile's
    #: ``ENV``), beneath what a sandbox or a process is given.
    env: tuple[tuple[str, str], ...] = ()
    #: Keep the rootfs after this many leading steps in the layer cache, and start from it when
    #: it is there (``layercache.py``); 0: no cache. Not part of the digest: it changes how
    #: the template is built, not what it is.
    cache_steps: int = 0
    #: How many leading steps are ours and trusted; every ``Run`` after them is untrusted code
    #: (a Dockerfile's) and runs in a gVisor sandbox (``isolated.py``). None: all are ours (a
    #: built-in recipe). Not part of the digest either.
    own_steps: int | None = None


def _content(recipe: Recipe) -> dict[str, Any]:
    # ``base`` only when set, so the digests of recipes without one stay what they were.
    based: dict[str, Any] = {}
    if recipe.base is not None:
        based["base"] = dataclasses.asdict(recipe.base)
    if recipe.env:
        based["env"] = [list(pair) for pair in recipe.env]
    return {
        **based,
        "format": FORMAT_VERSION,
        "name": recipe.name,
        "suite": recipe.suite,
        "packages": list(recipe.packages),
        # The step type is part of the content: a Write and a Clean of the same path differ.
        "steps": [
            {"type": type(step).__name__, **dataclasses.asdict(step)} for step in recipe.steps
        ],
    }


def digest(recipe: Recipe) -> str:
    """Return the sha256 (hex) of the recipe's content, stable across runs and dict orderings."""
    canonical = json.dumps(_content(recipe), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _pip_install(venv: str, *packages: str) -> tuple[str, ...]:
    # --no-cache-dir keeps wheels out of /root/.cache, i.e. out of the template.
    return (f"{venv}/bin/pip", "install", "--no-cache-dir", "--no-input", *packages)


_KERNELSPEC = {
    "argv": [
        f"{layout.USER_VENV}/bin/python",
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    ],
    "display_name": "Python 3",
    "language": "python",
    "metadata": {"debugger": False},
}

#: Deno's own Jupyter kernel (``deno jupyter --kernel``) for TypeScript and JavaScript.
_DENO_KERNELSPEC = {
    "argv": [
        f"{layout.USER_VENV}/bin/deno",
        "jupyter",
        "--kernel",
        "--conn",
        "{connection_file}",
    ],
    "display_name": "Deno",
    "language": "typescript",
    # SIGINT, Jupyter's default interrupt, kills Deno's kernel; an interrupt_request on the
    # control channel stops the running code (V8 terminate_execution) and keeps the kernel.
    "interrupt_mode": "message",
    "env": {
        # Deno caches analysis results here; the template is read-only below the user's home.
        "DENO_DIR": f"{layout.USER_HOME}/.cache/deno",
        # Without it, results' text/plain carries ANSI colour codes.
        "NO_COLOR": "1",
        # Sandboxes have no network; do not try.
        "DENO_NO_UPDATE_CHECK": "1",
    },
}


_HOSTS = "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def _python() -> Recipe:
    # The sandbox user is HOST_UID inside and outside (agent/layout.py): what it must be able
    # to write is owned by it here.
    user_home = Directory(layout.USER_HOME, 0o755, layout.HOST_UID, layout.HOST_GID)
    return Recipe(
        name="python",
        suite="bookworm",
        packages=("python3", "python3-venv", "ca-certificates"),
        steps=(
            Run("Create user venv", ("python3", "-m", "venv", layout.USER_VENV)),
            Run(
                "Install ipykernel, numpy, pandas, matplotlib",
                _pip_install(layout.USER_VENV, "ipykernel", "numpy", "pandas", "matplotlib"),
            ),
            Run(
                # The PyPI package ships the deno binary as a venv script: /opt/venv/bin/deno.
                "Install Deno",
                _pip_install(layout.USER_VENV, "deno"),
            ),
            Run(
                # The user's environment is the user's: `pip install` in a sandbox must work.
                "Give the user its venv",
                ("chown", "-R", f"{layout.HOST_UID}:{layout.HOST_GID}", layout.USER_VENV),
            ),
            Run("Create agent venv", ("python3", "-m", "venv", layout.AGENT_VENV)),
            Run("Install jupyter_client", _pip_install(layout.AGENT_VENV, "jupyter_client")),
            AddUser(
                "Add user",
                name=layout.USER_NAME,
                uid=layout.USER_UID,
                gid=layout.USER_GID,
                home=layout.USER_HOME,
            ),
            Write(
                "Lay out sandbox directories",
                directories=(
                    # An empty mount point: the runtime binds the host's agent package here.
                    Directory(layout.AGENT_PACKAGE_DIR),
                    Directory(layout.CHANNEL_DIR),
                    user_home,
                ),
                files=(
                    File(f"{layout.AGENT_APP_DIR}/sandcastle/__init__.py", ""),
                    File(
                        f"{layout.JUPYTER_DIR}/kernels/python3/kernel.json",
                        json.dumps(_KERNELSPEC, indent=1) + "\n",
                    ),
                ),
            ),
            Run(
                # Matplotlib builds its font list on first import (seconds); do it once here,
                # as the sandbox user, so the cache lands in the user's home with its ownership.
                "Build matplotlib font cache",
                (f"{layout.USER_VENV}/bin/python", "-c", "import matplotlib.pyplot"),
                env={"HOME": layout.USER_HOME, "MPLBACKEND": "Agg"},
                uid=layout.HOST_UID,
                gid=layout.HOST_GID,
                cwd=layout.USER_HOME,
            ),
            Write(
                "Add Deno kernelspec",
                files=(
                    File(
                        f"{layout.JUPYTER_DIR}/kernels/deno/kernel.json",
                        json.dumps(_DENO_KERNELSPEC, indent=1) + "\n",
                    ),
                ),
            ),
            Write(
                # debootstrap copies the build host's hostname and resolv.conf into the target;
                # sandboxes must not learn them (the runtime provides DNS when network is on).
                # minbase has no /etc/hosts, without which "localhost" goes to DNS.
                "Scrub build host identity",
                files=(
                    File("/etc/hostname", "sandbox\n"),
                    File("/etc/resolv.conf", ""),
                    File("/etc/hosts", _HOSTS),
                ),
            ),
            Clean(
                "Clean apt and pip caches",
                ("/var/lib/apt/lists", "/var/cache/apt", "/root/.cache", "/tmp", "/var/tmp"),
            ),
        ),
    )


def _recipes() -> dict[str, Recipe]:
    return {recipe.name: recipe for recipe in (_python(),)}


#: All known recipes by name. Built from plain data, so defining it at import has no side effects.
RECIPES: dict[str, Recipe] = _recipes()


def get_recipe(name: str) -> Recipe:
    """Return the recipe called ``name``; raises ``KeyError`` for unknown names."""
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown template {name!r}; known: {', '.join(sorted(RECIPES))}") from None
