"""A Dockerfile and its build context made into a :class:`~.recipes.Recipe` the builder runs.

``FROM debian:bookworm`` (or ``-slim``, ``12``) starts from debootstrap and our platform layer —
the ``python`` recipe's steps: the agent, the kernels, the sandbox user — with the user's
instructions on top; ``FROM <template>`` starts from a copy of a built template (which has the
platform already). Then, in order: ``RUN`` becomes a :class:`~.recipes.Run` with the ``ENV`` and
``ARG`` values, ``WORKDIR`` and ``USER`` in force at its line; ``COPY``/``ADD`` a
:class:`~.recipes.CopyIn` of checked context files; ``WORKDIR`` a directory. At the end the
user's venv and home are given back to the sandbox user (a ``RUN pip install`` runs as root, as
in Docker, and the sandbox user must still own what it may change).

The build context is untrusted input: a ``COPY`` source must stay inside it (no ``..`` out, no
absolute paths), and the context may hold only regular files, directories and symlinks that
point inside it; devices, sockets and FIFOs are refused, and so is a context over the size
limit.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sandcastle.agent import layout
from sandcastle.errors import InvalidRequestError
from sandcastle.runtime.templates import dockerfile as df
from sandcastle.runtime.templates.buildenv import BUILD_PATH
from sandcastle.runtime.templates.catalogue import TEMPLATE_KEY, load_template, resolve
from sandcastle.runtime.templates.recipes import (
    Base,
    Chown,
    Clean,
    CopyIn,
    Directory,
    Placed,
    Recipe,
    Run,
    Step,
    Write,
    get_recipe,
)

MAX_CONTEXT_BYTES = 1 << 30
MAX_CONTEXT_ENTRIES = 100_000
DEBIAN_IMAGES = frozenset(
    {"debian:bookworm", "debian:bookworm-slim", "debian:12", "debian:12-slim"}
)
#: What the platform layer is taken from.
PLATFORM_RECIPE = "python"
_SANDBOX_USER = (layout.USER_UID, layout.USER_GID)
_USERS = {
    "root": (0, 0),
    "0": (0, 0),
    layout.USER_NAME: _SANDBOX_USER,
    str(layout.USER_UID): _SANDBOX_USER,
}


class BuildContextError(InvalidRequestError):
    """A build context this server will not take files from."""


@dataclass
class _State:
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: tuple[int, int] = (0, 0)
    labels: dict[str, str] = field(default_factory=dict)

    def variables(self) -> dict[str, str]:
        return self.args | self.env


def recipe_from_dockerfile(
    name: str,
    text: str,
    context: Path | None,
    templates_dir: Path,
    build_args: Mapping[str, str] | None = None,
    org_id: str | None = None,
) -> Recipe:
    """The recipe of template ``name`` (a key) built from Dockerfile ``text`` with build
    context ``context`` (None: no context; a ``COPY`` is then an error). ``FROM <template>``
    means what it means to org ``org_id`` (``catalogue.resolve``); None: the server's own
    templates, for its operator."""
    if not TEMPLATE_KEY.match(name):
        raise df.DockerfileError(1, f"{name!r} is not a template name")
    instructions = df.parse(text)
    given = dict(build_args or {})
    state = _State()
    files = _Context(context) if context is not None else None
    steps: list[Step] = []
    base: Base | None = None
    before_from: dict[str, str] = {}
    for instruction in instructions:
        match instruction:
            case df.Arg(line=_, name=arg, default=default):
                # As in Docker: an ARG before FROM is for FROM alone; after it, an ARG without
                # a default takes the build argument, else the one declared before FROM.
                inherited = None if default is not None else before_from.get(arg)
                value = given.get(arg, default if default is not None else inherited)
                if value is not None:
                    state.args[arg] = df.expand(value, state.variables())
            case df.From(line=line, image=image):
                image = df.expand(image, state.args)
                base, steps = _start(name, image, line, templates_dir, org_id)
                before_from, state.args = state.args, {}
            case df.Env(pairs=pairs):
                for key, value in pairs:
                    state.env[key] = df.expand(value, state.variables())
            case df.Label(pairs=pairs):
                for key, value in pairs:
                    state.labels[key] = df.expand(value, state.variables())
            case df.Workdir(line=line, path=path):
                target = PurePosixPath(state.workdir) / df.expand(path, state.variables())
                state.workdir = os.path.normpath(str(target))
                steps.append(_directory(line, state))
            case df.User(line=line, user=user):
                state.user = _user(line, df.expand(user, state.variables()))
            case df.Run():
                steps.append(_run(instruction, state))
            case df.Copy():
                if files is None:
                    raise df.DockerfileError(instruction.line, "COPY needs a build context")
                steps.append(files.copy(instruction, state))
    platform = get_recipe(PLATFORM_RECIPE)
    env = tuple(state.env.items())
    if base is None and len(steps) == len(platform.steps):
        # FROM Debian and no step of the user's: the platform layer as it is (the built-in
        # ``python``), all of it ours; caching it whole would only copy a template.
        return Recipe(name, platform.suite, platform.packages, tuple(steps), env=env)
    steps += _closing()
    # From Debian, the platform layer is the slow part (debootstrap, pip): cached.
    cached = 0 if base is not None else len(platform.steps)
    # And trusted: once the user's steps (or a base template, made by some) have run, the
    # rootfs is the user's, and every program of it untrusted.
    return Recipe(
        name, platform.suite, platform.packages, tuple(steps), base=base, env=env,
        cache_steps=cached, own_steps=cached,
    )  # fmt: skip


def _start(
    name: str, image: str, line: int, templates_dir: Path, org_id: str | None
) -> tuple[Base | None, list[Step]]:
    if image in DEBIAN_IMAGES:
        return None, list(get_recipe(PLATFORM_RECIPE).steps)
    info = resolve(image, org_id, templates_dir) if org_id else load_template(image, templates_dir)
    if image == name or (info is not None and info.name == name):
        raise df.DockerfileError(line, f"template {image!r} cannot start from itself")
    if info is None:
        known = ", ".join(sorted(DEBIAN_IMAGES))
        raise df.DockerfileError(
            line, f"FROM {image}: not a built template here, nor one of {known}"
        )
    return Base(info.name, info.build_id), []


def _run(instruction: df.Run, state: _State) -> Run:
    argv = instruction.argv or ("/bin/sh", "-c", instruction.shell or "")
    home = "/root" if state.user[0] == 0 else layout.USER_HOME
    env = {
        "PATH": f"{layout.USER_VENV}/bin:{BUILD_PATH}",
        "HOME": home,
    }
    shown = " ".join(argv) if instruction.argv else instruction.shell or ""
    return Run(
        label=f"line {instruction.line}: RUN {_short(shown)}",
        argv=tuple(argv),
        env=env | state.variables(),
        uid=state.user[0],
        gid=state.user[1],
        cwd=state.workdir,
    )


def _directory(line: int, state: _State) -> Write:
    uid, gid = state.user
    return Write(
        f"line {line}: WORKDIR {state.workdir}",
        directories=(Directory(state.workdir, 0o755, uid, gid),),
    )


def _user(line: int, user: str) -> tuple[int, int]:
    name = user.split(":")[0]
    if name not in _USERS:
        raise df.DockerfileError(line, f"USER {user}: only root and {layout.USER_NAME} exist here")
    return _USERS[name]


def _closing() -> list[Step]:
    # On the host side, not a RUN of chown: the image's chown is the user's to have replaced.
    return [
        Chown(
            "Give the user its venv and home",
            tuple(layout.USER_WRITABLE),
            layout.HOST_UID,
            layout.HOST_GID,
        ),
        Clean("Clean temporary files", ("/tmp", "/var/tmp", "/root/.cache")),
    ]


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Context:
    """A build context, checked once as a whole before anything is taken from it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise BuildContextError(f"the build context {root} is not a directory")
        check_context(self.root)

    def copy(self, instruction: df.Copy, state: _State) -> CopyIn:
        variables = state.variables()
        uid, gid = _owner(instruction, variables)
        dest = df.expand(instruction.dest, variables)
        into_dir = dest.endswith("/") or len(instruction.sources) > 1
        dest_path = PurePosixPath(state.workdir) / dest
        entries: list[Placed] = []
        for raw in instruction.sources:
            source = self._source(instruction.line, df.expand(raw, variables))
            if source.is_dir():
                entries += self._tree(source, dest_path, uid, gid)
            else:
                target = dest_path / source.name if into_dir else dest_path
                entries.append(_file(source, str(target), uid, gid))
        keyword = "ADD" if instruction.add else "COPY"
        label = f"line {instruction.line}: {keyword} {' '.join(instruction.sources)} {dest}"
        return CopyIn(label, tuple(entries))

    def _source(self, line: int, raw: str) -> Path:
        relative = PurePosixPath(raw)
        if relative.is_absolute() or ".." in relative.parts:
            raise df.DockerfileError(
                line, f"COPY source {raw!r} must stay inside the build context"
            )
        path = self.root / relative
        if not path.exists() or path.is_symlink():
            raise df.DockerfileError(line, f"COPY source {raw!r} is not in the build context")
        return path

    def _tree(self, top: Path, dest: PurePosixPath, uid: int, gid: int) -> list[Placed]:
        entries = [Placed("", str(dest), "", 0o755, uid, gid)]
        for directory, dirnames, filenames in os.walk(top):
            dirnames.sort()
            here = dest / Path(directory).relative_to(top)
            for name in dirnames:
                mode = stat.S_IMODE(os.lstat(Path(directory) / name).st_mode)
                entries.append(Placed("", str(here / name), "", mode | 0o700, uid, gid))
            for name in sorted(filenames):
                path = Path(directory) / name
                if not path.is_symlink():  # links inside the context are not copied
                    entries.append(_file(path, str(here / name), uid, gid))
        return entries


def _owner(instruction: df.Copy, variables: dict[str, str]) -> tuple[int, int]:
    if instruction.chown is None:
        return 0, 0
    return _user(instruction.line, df.expand(instruction.chown, variables))


def _file(path: Path, inner: str, uid: int, gid: int) -> Placed:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    return Placed(str(path), inner, digest.hexdigest(), mode, uid, gid)


def check_context(root: Path) -> None:
    """Refuse a build context holding anything but files, directories and links that stay
    inside it, or more than the limits allow."""
    total = entries = 0
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            entries += 1
            path = Path(directory) / name
            info = os.lstat(path)
            relative = path.relative_to(root)
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(path)
                inside = os.path.normpath(os.path.join(os.path.dirname(str(relative)), target))
                if target.startswith("/") or inside == ".." or inside.startswith("../"):
                    raise BuildContextError(f"the build context's link {relative} leads out of it")
            elif not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise BuildContextError(
                    f"the build context's {relative} is not a file or directory"
                )
            else:
                total += info.st_size
        if total > MAX_CONTEXT_BYTES or entries > MAX_CONTEXT_ENTRIES:
            raise BuildContextError("the build context is over its limits (1 GiB, 100,000 entries)")
