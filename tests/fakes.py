"""In-process fakes for the fast test layers.

:class:`FakeRuntime` is an honest stand-in for a backend: every sandbox gets a real
:class:`~sandcastle.runtime.channel.AgentLink` listening on a real Unix socket, and a fake agent,
an asyncio task in this process, dials it with the real agent channel
(:class:`~sandcastle.agent.channel.AgentChannel`). Only the kernel is fake: code runs with
``exec``/``eval`` in a namespace per context, and the agent emits the events the real one does
(``sandcastle.agent.kernels``). Failures are injected by name: a launch that fails, an agent that
never connects, processes that die, an agent that restarts and forgets its contexts, an OOM kill,
a paused (frozen) sandbox whose agent answers nothing until resumed.
:class:`SnapshottingFakeRuntime` adds memory snapshots (hibernate, snapshot, restore, forks).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import io
import os
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandcastle import waiting
from sandcastle.agent import protocol
from sandcastle.agent.channel import AgentChannel, Emit, RequestFailed
from sandcastle.errors import RuntimeBackendError, SandboxBusyError
from sandcastle.runtime.base import LaunchSpec, ProcessState, Runtime, destroyed, paused
from sandcastle.runtime.channel import AgentLink

#: IPython's display formatter: method → MIME type it fills in.
_REPR_METHODS = (
    ("_repr_html_", "text/html"),
    ("_repr_markdown_", "text/markdown"),
    ("_repr_svg_", "image/svg+xml"),
    ("_repr_png_", "image/png"),
    ("_repr_jpeg_", "image/jpeg"),
    ("_repr_latex_", "text/latex"),
    ("_repr_json_", "application/json"),
    ("_repr_javascript_", "application/javascript"),
    ("_repr_pdf_", "application/pdf"),
)
#: IPython colours its tracebacks; the control plane must strip this.
_RED, _RESET = "\x1b[0;31m", "\x1b[0m"
#: A cell whose first line is ``# gate: NAME`` waits until the test opens that gate.
_GATE = "# gate: "


def mime_bundle(value: Any) -> dict[str, Any]:
    """The MIME bundle IPython would publish for ``value``."""
    bundle: dict[str, Any] = {"text/plain": repr(value)}
    kind = type(value)
    for method, mime in _REPR_METHODS:
        render = getattr(kind, method, None)
        if render is not None:
            rendered = render(value)
            if rendered is not None:
                bundle[mime] = rendered
    mimebundle = getattr(kind, "_repr_mimebundle_", None)
    if mimebundle is not None:
        bundle.update(mimebundle(value))
    return bundle


@dataclass
class FakeContext:
    """One REPL context: a namespace that lives across executions, and a counter."""

    id: str
    language: str
    cwd: str
    namespace: dict[str, Any] = field(default_factory=dict)
    execution_count: int = 0
    dead_reason: str | None = None


@contextlib.contextmanager
def _scoped_env(values: dict[str, str]) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in previous.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_cell(code: str, namespace: dict[str, Any]) -> Any:
    """Run ``code`` like a notebook cell: the value of a final expression is the result."""
    tree = ast.parse(code, filename="<cell>", mode="exec")
    last: ast.Expression | None = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body[-1].value)
        tree.body.pop()
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is not None:
        return eval(compile(last, "<cell>", "eval"), namespace)
    return None


def _cell_traceback(exc: BaseException) -> list[str]:
    """The traceback lines of the user's cell only, as a kernel shows them."""
    summary = traceback.TracebackException.from_exception(exc)
    summary.stack = traceback.StackSummary.from_list(
        [frame for frame in summary.stack if frame.filename == "<cell>"]
    )
    return [chunk.rstrip("\n") for chunk in summary.format()]


class FakeAgent:
    """The agent's request handlers over a fake kernel; the channel itself is the real one."""

    def __init__(
        self,
        sandbox_id: str,
        socket_path: Path,
        default_cwd: str,
        *,
        thawed: asyncio.Event | None = None,
        on_oom: Any = None,
        fs_root: Path | None = None,
    ) -> None:
        self.sandbox_id = sandbox_id
        #: Where the sandbox's filesystem lives on the host: sandbox path ``/p`` is ``fs_root/p``.
        self.fs_root = fs_root
        #: Gates that ``# gate: NAME`` cells wait on; executions waiting on one right now, the
        #: most ever at once, and the contexts whose execution the host cancelled.
        self.gates: dict[str, asyncio.Event] = {}
        self.waiting = 0
        self.most_waiting = 0
        self.cancelled: list[str] = []
        self._read_handles: dict[str, Any] = {}
        #: Cleared while the sandbox is paused: a frozen process answers nothing.
        if thawed is None:
            thawed = asyncio.Event()
            thawed.set()
        self.thawed = thawed
        self.default_cwd = default_cwd
        self.contexts: dict[str, FakeContext] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        #: The next execution's kernel is killed by the OOM killer.
        self.oom_next = False
        #: Raised by the next request's handler: the agent itself broke (not the user's code).
        self.fail_next: Exception | None = None
        self._on_oom = on_oom
        self.channel = AgentChannel(
            str(socket_path),
            sandbox_id,
            {
                "ping": self.ping,
                "warm": self.warm,
                "context.create": self.context_create,
                "context.delete": self.context_delete,
                "context.rename": self.context_rename,
                "execute": self.execute,
                "files.snapshot": self.files_snapshot,
                "file.read.open": self.file_read_open,
                "file.read.chunk": self.file_read_chunk,
                "file.read.close": self.file_read_close,
            },
            lambda: list(self.contexts),
        )

    async def _record(self, method: str, params: dict[str, Any]) -> None:
        await self.thawed.wait()
        self.requests.append((method, params))
        failure, self.fail_next = self.fail_next, None
        if failure is not None:
            raise failure

    async def ping(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        await self._record("ping", params)
        return {"contexts": list(self.contexts)}

    async def warm(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        await self._record("warm", params)
        return {}

    async def context_create(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        await self._record("context.create", params)
        context_id, language = str(params["context_id"]), str(params["language"])
        if language != "python":
            raise RequestFailed("invalid", f"unsupported language {language!r}")
        if self.oom_next:
            # The new kernel is the out-of-memory killer's victim, as in a full sandbox.
            self.oom_next = False
            if self._on_oom is not None:
                self._on_oom()
            raise RequestFailed("kernel_failed", "RuntimeError: Kernel died before replying")
        ctx = self.contexts.get(context_id)
        if ctx is None:
            ctx = FakeContext(context_id, language, params.get("cwd") or self.default_cwd)
            self.contexts[context_id] = ctx
            if self.fs_root is not None:
                self.host_path(ctx.cwd).mkdir(parents=True, exist_ok=True)
        return {"context_id": ctx.id, "language": ctx.language, "cwd": ctx.cwd}

    async def context_delete(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        await self._record("context.delete", params)
        self.contexts.pop(str(params["context_id"]), None)
        return {}

    async def context_rename(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        await self._record("context.rename", params)
        renamed = {}
        for old, new in dict(params["ids"]).items():
            ctx = self.contexts.pop(str(old), None)
            if ctx is not None:
                ctx.id = str(new)
                renamed[ctx.id] = ctx
        self.contexts.update(renamed)
        return {"contexts": list(self.contexts)}

    async def execute(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        await self._record("execute", params)
        context_id = str(params["context_id"])
        ctx = self.contexts.get(context_id)
        if ctx is None:
            raise RequestFailed("context_not_found", f"no context {context_id} in this sandbox")
        if self.oom_next:
            self.oom_next = False
            ctx.dead_reason = (
                "the context's kernel process was killed by signal 9; its state is lost, "
                "create a new context"
            )
            if self._on_oom is not None:
                self._on_oom()
        if ctx.dead_reason is not None:
            await emit(
                {
                    "kind": "error",
                    "name": "KernelDiedError",
                    "value": ctx.dead_reason,
                    "traceback": [],
                }
            )
            return {"status": "died", "execution_count": None, "restarted": False}

        code = str(params["code"])
        if code.startswith(_GATE):
            gate = self.gates.setdefault(
                code.splitlines()[0][len(_GATE) :].strip(), asyncio.Event()
            )
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            try:
                await gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(context_id)
                raise
            finally:
                self.waiting -= 1
        ctx.execution_count += 1
        count = ctx.execution_count
        await emit({"kind": "execution_count", "value": count})
        displays: list[dict[str, Any]] = []
        ctx.namespace["display"] = lambda value: displays.append(mime_bundle(value))
        ctx.namespace["write_file"] = lambda name, data: self.write_file(ctx.cwd, name, data)
        stdout, stderr = io.StringIO(), io.StringIO()
        value: Any = None
        failure: BaseException | None = None
        env = {str(k): str(v) for k, v in (params.get("env_vars") or {}).items()}
        with (
            _scoped_env(env),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            try:
                value = run_cell(str(params["code"]), ctx.namespace)
            except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - user code: a result
                failure = exc
        for name, buffer in (("stdout", stdout), ("stderr", stderr)):
            if buffer.getvalue():
                await emit({"kind": name, "text": buffer.getvalue()})
        for data in displays:
            await emit({"kind": "result", "is_primary": False, "data": data})
        if failure is not None:
            lines = _cell_traceback(failure)
            await emit(
                {
                    "kind": "error",
                    "name": type(failure).__name__,
                    "value": str(failure),
                    "traceback": [f"{_RED}{'-' * 75}{_RESET}", *lines],
                }
            )
            status = "error"
        else:
            if value is not None:
                await emit({"kind": "result", "is_primary": True, "data": mime_bundle(value)})
            status = "ok"
        return {
            "status": status,
            "execution_count": count,
            "restarted": False,
            "truncated_chars": {"stdout": 0, "stderr": 0},
        }

    # --- files: the sandbox's filesystem is a directory on the host --------------------------

    def host_path(self, path: str) -> Path:
        if self.fs_root is None:
            raise RequestFailed("not_found", "this fake sandbox has no filesystem")
        return self.fs_root / path.lstrip("/")

    def write_file(self, cwd: str, name: str, data: str | bytes) -> None:
        """``write_file(name, data)`` in a cell: a file in the context's directory."""
        target = self.host_path(cwd) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)

    async def files_snapshot(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        await self._record("files.snapshot", params)
        root = str(params.get("root") or self.default_cwd)
        base = self.host_path(root)
        files: dict[str, list[int]] = {}
        if not base.is_dir():
            raise RequestFailed("not_found", f"{root}: no such directory")
        for path in sorted(base.rglob("*")):
            relative = path.relative_to(base)
            if any(part.startswith(".") for part in relative.parts):
                continue
            if path.is_file() and not path.is_symlink():
                st = path.stat()
                files[relative.as_posix()] = [st.st_size, st.st_mtime_ns]
        return {"root": root, "files": files, "truncated": False}

    async def file_read_open(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        await self._record("file.read.open", params)
        path = str(params["path"])
        host = self.host_path(path)
        if not host.is_file():
            raise RequestFailed("not_found", f"{path}: no such file")
        handle = f"h{len(self._read_handles) + 1}"
        self._read_handles[handle] = host.open("rb")
        st = host.stat()
        info = {
            "name": host.name,
            "path": path,
            "type": "file",
            "size": st.st_size,
            "mode": st.st_mode & 0o7777,
            "mtime_ns": st.st_mtime_ns,
        }
        return {"handle": handle, "size": st.st_size, "info": info}

    async def file_read_chunk(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        await self._record("file.read.chunk", params)
        stream = self._read_handles[str(params["handle"])]
        stream.seek(int(params["offset"]))
        data = stream.read(int(params["length"]))
        return {protocol.PAYLOAD: data, "eof": not data}

    async def file_read_close(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        await self._record("file.read.close", params)
        stream = self._read_handles.pop(str(params["handle"]), None)
        if stream is not None:
            stream.close()
        return {}


@dataclass
class FakeSandbox:
    spec: LaunchSpec
    socket_path: Path
    agent: FakeAgent | None = None
    task: asyncio.Task[None] | None = None
    alive: bool = True
    oom_kills: int = 0
    #: What the cgroup reports in use (``fill_memory``).
    memory_bytes: int = 0
    thawed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Checkpointed without keep_running: no processes, its layer (``fs``) kept for restore.
    hibernated: bool = False

    def __post_init__(self) -> None:
        self.thawed.set()


class FakeRuntime(Runtime):
    """A backend whose sandboxes are asyncio tasks speaking the real channel protocol."""

    name = "fake"

    def __init__(
        self,
        sockets_dir: Path | None = None,
        *,
        fail_launch: bool | BaseException = False,
        agent_connects: bool = True,
    ) -> None:
        # Unix socket paths are limited to ~108 bytes: keep them short, outside pytest's tmp.
        self._owns_dir = sockets_dir is None
        self._dir = sockets_dir or Path(tempfile.mkdtemp(prefix="scfake-"))
        #: ``True`` raises ``RuntimeBackendError``; an exception instance is raised as is.
        self.fail_launch = fail_launch
        #: ``False``: processes start but the agent never dials home.
        self.agent_connects = agent_connects
        self.launched: list[LaunchSpec] = []
        self.destroyed: list[str] = []
        self._boxes: dict[str, FakeSandbox] = {}
        self._links: dict[str, AgentLink] = {}

    # --- the Runtime interface -----------------------------------------------------------

    async def launch(self, spec: LaunchSpec) -> AgentLink:
        self.launched.append(spec)
        if self.fail_launch is not False:
            if isinstance(self.fail_launch, BaseException):
                raise self.fail_launch
            raise RuntimeBackendError("injected launch failure")
        if not spec.rootfs.is_dir():
            raise RuntimeBackendError(f"template root filesystem missing at {spec.rootfs}")
        box = FakeSandbox(spec, self._dir / spec.sandbox_id / "agent.sock")
        self._boxes[spec.sandbox_id] = box
        try:
            link = AgentLink(spec.sandbox_id, box.socket_path)
            await link.listen()
            self._links[spec.sandbox_id] = link
            if self.agent_connects:
                self._start_agent(box)
        except BaseException:
            await self.destroy(spec.sandbox_id)
            raise
        return link

    async def adopt(self, sandbox_id: str) -> AgentLink | None:
        box = self._boxes.get(sandbox_id)
        if box is None or not box.alive:
            return None
        link = self._links.get(sandbox_id)
        if link is None:
            link = AgentLink(sandbox_id, box.socket_path)
            await link.listen()
            self._links[sandbox_id] = link
        return link

    async def poll(self, sandbox_id: str) -> ProcessState:
        box = self._boxes.get(sandbox_id)
        if box is None:
            return ProcessState(alive=False)
        return ProcessState(
            alive=box.alive,
            oom_kills=box.oom_kills,
            memory_bytes=box.memory_bytes,
            frozen=not box.thawed.is_set(),
        )

    async def pause(self, sandbox_id: str) -> None:
        box = self._boxes.get(sandbox_id)
        if box is None or not box.alive:
            raise RuntimeBackendError(f"sandbox {sandbox_id} has no processes to pause")
        box.thawed.clear()
        link = self._links.get(sandbox_id)
        if link is not None:
            link.freeze(functools.partial(paused, sandbox_id))

    async def resume(self, sandbox_id: str) -> None:
        box = self._boxes.get(sandbox_id)
        if box is not None:
            box.thawed.set()
        link = self._links.get(sandbox_id)
        if link is not None:
            link.thaw()

    async def destroy(self, sandbox_id: str) -> None:
        self.destroyed.append(sandbox_id)
        link = self._links.pop(sandbox_id, None)
        if link is not None:
            await link.aclose(functools.partial(destroyed, sandbox_id))
        box = self._boxes.pop(sandbox_id, None)
        if box is not None:
            await self._stop_agent(box)
            box.alive = False
        shutil.rmtree(self._dir / sandbox_id, ignore_errors=True)

    async def list_sandboxes(self) -> list[str]:
        return sorted(self._boxes)

    def link(self, sandbox_id: str) -> AgentLink | None:
        return self._links.get(sandbox_id)

    async def aclose(self) -> None:
        # Like a real backend: the server lets go, the sandboxes (agents) keep running and redial.
        for link in self._links.values():
            await link.aclose()
        self._links.clear()

    # --- failure injection and inspection ------------------------------------------------

    def agent(self, sandbox_id: str) -> FakeAgent:
        agent = self._boxes[sandbox_id].agent
        assert agent is not None, f"sandbox {sandbox_id} has no agent"
        return agent

    async def kill(self, sandbox_id: str) -> None:
        """Every process of the sandbox dies: the agent is gone and ``poll`` reports it."""
        box = self._boxes[sandbox_id]
        await self._stop_agent(box)
        box.alive = False

    async def stop_agent(self, sandbox_id: str) -> None:
        """The agent exits, its sandbox's processes stay: the host waits for it to redial."""
        await self._stop_agent(self._boxes[sandbox_id])

    async def restart_agent(self, sandbox_id: str, timeout_s: float = 5.0) -> None:
        """The agent process restarts: it redials with no contexts."""
        box = self._boxes[sandbox_id]
        link = self._links[sandbox_id]
        await self._stop_agent(box)
        # Until the host has noticed the old connection is gone.
        assert await waiting.until(lambda: not link.connected, timeout_s=timeout_s)
        self._start_agent(box)
        await link.wait_connected(timeout_s)

    def fill_memory(self, sandbox_id: str, used_bytes: int) -> None:
        """The sandbox's memory in use is ``used_bytes`` from now on, and the next kernel to
        start hangs until the agent gives up on it (as in a sandbox that is full)."""
        self._boxes[sandbox_id].memory_bytes = used_bytes
        self.agent(sandbox_id).fail_next = RequestFailed(
            "kernel_failed", "RuntimeError: Kernel didn't respond in 30 seconds"
        )

    def inject_oom(self, sandbox_id: str) -> None:
        """The next execution's kernel is killed by the OOM killer (the cgroup counts it)."""
        self.agent(sandbox_id).oom_next = True

    async def shutdown(self) -> None:
        """End of test: stop every fake agent and remove the sockets."""
        await self.aclose()
        for box in list(self._boxes.values()):
            await self._stop_agent(box)
        self._boxes.clear()
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    # --- internals -----------------------------------------------------------------------

    def _start_agent(self, box: FakeSandbox) -> None:
        def on_oom() -> None:
            box.oom_kills += 1

        box.agent = FakeAgent(
            box.spec.sandbox_id,
            box.socket_path,
            box.spec.cwd,
            thawed=box.thawed,
            on_oom=on_oom,
            fs_root=box.socket_path.parent / "fs",
        )
        box.task = asyncio.create_task(
            box.agent.channel.run_forever(), name=f"fake-agent-{box.spec.sandbox_id}"
        )

    async def _stop_agent(self, box: FakeSandbox) -> None:
        task, box.task = box.task, None
        if task is not None:
            task.cancel()
            # ``wait`` rather than ``await``: our own cancellation must not be swallowed.
            await asyncio.wait([task])
            if not task.cancelled():
                task.result()  # an agent that crashed is a bug in the fake: surface it
            # Let the handler tasks the channel cancelled on its way out finish their replies.
            await asyncio.sleep(0)


def _copy_context(ctx: FakeContext) -> FakeContext:
    """A context as a memory image holds it (the namespace copied one level deep)."""
    return FakeContext(
        ctx.id,
        ctx.language,
        ctx.cwd,
        namespace=dict(ctx.namespace),
        execution_count=ctx.execution_count,
        dead_reason=ctx.dead_reason,
    )


class SnapshottingFakeRuntime(FakeRuntime):
    """A fake backend with memory snapshots, like gVisor's.

    ``checkpoint`` keeps the agent's contexts (in this process) keyed by the image directory and
    writes a file there, so images have a size and can be deleted; a hibernation stops the
    agent and keeps the sandbox's files, a snapshot copies them into ``<image>/layer``.
    ``restore`` starts a new agent with copies of the saved contexts: for a hibernated sandbox
    over its own files, for a new id over a copy of the image's layer. A checkpoint while an
    execution is in flight (a ``# gate:`` cell waiting) raises ``SandboxBusyError``.
    """

    supports_memory_snapshots = True

    def __init__(self, sockets_dir: Path | None = None, **kwargs: Any) -> None:
        super().__init__(sockets_dir, **kwargs)
        self.checkpoints: list[tuple[str, Path, bool]] = []
        self.restores: list[tuple[LaunchSpec, Path]] = []
        #: ``True``: the next restores fail with ``RuntimeBackendError``.
        self.fail_restore = False
        self._images: dict[Path, dict[str, FakeContext]] = {}

    async def checkpoint(self, sandbox_id: str, image_dir: Path, *, keep_running: bool) -> int:
        box = self._boxes.get(sandbox_id)
        if box is None or not box.alive or box.agent is None:
            raise RuntimeBackendError(f"sandbox {sandbox_id} has no processes to save")
        if not box.thawed.is_set():
            raise RuntimeBackendError(f"sandbox {sandbox_id} is frozen; thaw it first")
        if box.agent.waiting:
            raise SandboxBusyError(f"sandbox {sandbox_id} is running code; try again later")
        self.checkpoints.append((sandbox_id, image_dir, keep_running))
        self._images[image_dir] = {k: _copy_context(c) for k, c in box.agent.contexts.items()}
        (image_dir / "memory.img").write_bytes(b"\0" * 4096)
        fs = self._dir / sandbox_id / "fs"
        if keep_running:
            if fs.is_dir():
                shutil.copytree(fs, image_dir / "layer", symlinks=True)
            else:
                (image_dir / "layer").mkdir()
        else:
            link = self._links.pop(sandbox_id, None)
            if link is not None:
                await link.aclose()
            await self._stop_agent(box)
            box.alive = False
            box.hibernated = True
        return sum(p.stat().st_size for p in image_dir.rglob("*") if p.is_file())

    async def restore(self, spec: LaunchSpec, image_dir: Path) -> AgentLink:
        self.restores.append((spec, image_dir))
        if self.fail_restore:
            raise RuntimeBackendError("injected restore failure")
        contexts = self._images.get(image_dir)
        if contexts is None or not image_dir.is_dir():
            raise RuntimeBackendError(f"no image at {image_dir}")
        old = self._boxes.get(spec.sandbox_id)
        if old is None:
            layer = image_dir / "layer"
            if not layer.is_dir():
                raise RuntimeBackendError(f"the image at {image_dir} has no writable layer")
            shutil.copytree(layer, self._dir / spec.sandbox_id / "fs", symlinks=True)
        elif not old.hibernated:
            raise RuntimeBackendError(f"sandbox {spec.sandbox_id} is running")
        box = FakeSandbox(spec, self._dir / spec.sandbox_id / "agent.sock")
        self._boxes[spec.sandbox_id] = box
        try:
            link = AgentLink(spec.sandbox_id, box.socket_path)
            await link.listen()
            self._links[spec.sandbox_id] = link
            self._start_agent(box)
            assert box.agent is not None
            box.agent.contexts = {k: _copy_context(c) for k, c in contexts.items()}
        except BaseException:
            await self.destroy(spec.sandbox_id)
            raise
        return link
