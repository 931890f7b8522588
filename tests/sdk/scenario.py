"""One user's session through the SDK alone, run by ``tests/e2e/test_sdk.py`` in a fresh venv
where only ``sdk/python`` is installed (so it imports nothing of the server or of the tests).

    python scenario.py sync|async BACKEND

It prints ``step NAME`` as each capability checks out and exits non-zero at the first that does
not; the test compares the steps printed with the steps expected, so a step that silently did
not run fails too. ``SANDCASTLE_URL`` and ``SANDCASTLE_API_KEY`` name the server and an admin key
of its default org; ``SCENARIO_BIG_MB`` is the size of the large-file round trip.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tempfile
import uuid
from pathlib import Path

from sandcastle_sdk import AsyncSandbox, AsyncSandcastle, Sandbox, Sandcastle, errors

ARTIFACT_CODE = """
import os
os.makedirs("/home/user/artifacts", exist_ok=True)
with open("/home/user/artifacts/report.csv", "w") as f:
    f.write("a,b\\n1,2\\n")
6 * 7
"""


def step(name: str) -> None:
    print(f"step {name}", flush=True)


def big_file(directory: Path) -> tuple[Path, str]:
    path = directory / "big.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(int(os.environ.get("SCENARIO_BIG_MB", "100"))):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    return path, digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Progress:
    """Records progress calls: they must rise to the whole size."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))

    def check(self, size: int) -> None:
        assert len(self.calls) > 1, self.calls
        dones = [done for done, _ in self.calls]
        assert dones == sorted(dones) and dones[-1] == size, self.calls[-3:]
        assert self.calls[-1][1] in (size, None), self.calls[-1]


def sync_scenario(backend: str, scratch: Path) -> None:
    with Sandcastle() as client:
        assert client.health().status == "ok"
        step("health")
        with Sandbox.create(
            timeout=600, memory_mb=512, metadata={"who": "sdk"}, internet=False, client=client
        ) as sandbox:
            assert sandbox.info.metadata == {"who": "sdk"} and sandbox.status == "running"
            step("create")
            sync_code(sandbox)
            sync_files(sandbox, scratch)
            sync_processes(sandbox)
            sync_runs(sandbox, scratch)
            sync_lifecycle(sandbox, client, backend)
        assert Sandbox.connect(sandbox.id, client=client).status == "destroyed"
        step("killed-on-exit")
        sync_listing(client)
        sync_tenancy(client)


def sync_code(sandbox: Sandbox) -> None:
    first = sandbox.run_code("x = 41\nprint('hello')\nx + 1")
    assert (first.text, first.stdout) == ("42", "hello\n"), first
    again = sandbox.run_code("x", context=first.context_id)
    assert again.text == "41"
    failed = sandbox.run_code("1 / 0")
    assert failed.error is not None and failed.error.name == "ZeroDivisionError"
    seen: list[str] = []
    streamed = sandbox.run_code(
        "import os, time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.05)\n"
        "os.environ['TOKEN']",
        env_vars={"TOKEN": "t0k"},
        on_stdout=seen.append,
    )
    assert "".join(seen) == "0\n1\n2\n" and streamed.text == "'t0k'", (seen, streamed)
    late = sandbox.run_code("import time; time.sleep(30)", timeout=1)
    assert late.error is not None and late.error.name == "TimeoutError", late.error
    step("run_code")
    context = sandbox.contexts.create("python", cwd="/tmp")
    sandbox.run_code("y = 7", context=context.id)
    assert sandbox.run_code("import os; y, os.getcwd()", context=context.id).text == "(7, '/tmp')"
    assert context.id in {c.id for c in sandbox.contexts.list()}
    sandbox.contexts.restart(context.id)
    assert sandbox.run_code("y", context=context.id).error is not None
    sandbox.contexts.delete(context.id)
    try:
        sandbox.contexts.get(context.id)
    except errors.NotFoundError:
        pass
    else:
        raise AssertionError("a deleted context is still found")
    step("contexts")


def sync_files(sandbox: Sandbox, scratch: Path) -> None:
    files = sandbox.files
    files.write("/home/user/notes/a.txt", "some notes")
    assert files.read_text("/home/user/notes/a.txt") == "some notes"
    files.make_dir("/home/user/notes/deeper")
    names = {e.name: e.type for e in files.list("/home/user/notes").entries}
    assert names == {"a.txt": "file", "deeper": "dir"}, names
    moved = files.rename("/home/user/notes/a.txt", "/home/user/notes/b.txt")
    assert moved.path == "/home/user/notes/b.txt" and files.stat(moved.path).size == 10
    files.remove("/home/user/notes")
    assert not files.exists("/home/user/notes/b.txt")
    try:
        files.read("/home/user/none")
    except errors.NotFoundError as exc:
        assert exc.status == 404 and exc.type == "not_found_error"
    else:
        raise AssertionError("reading a missing file did not raise NotFoundError")
    files.write("/home/user/keep.txt", b"kept")
    try:
        files.write("/home/user/keep.txt", b"x", overwrite=False)
    except errors.ConflictError:
        pass
    else:
        raise AssertionError("overwrite=False wrote over a file")
    assert files.read("/home/user/keep.txt") == b"kept"
    step("files")
    local, digest = big_file(scratch)
    size = local.stat().st_size
    up = Progress()
    assert files.upload(local, "/home/user/big.bin", progress=up).size == size
    up.check(size)
    down = Progress()
    fetched = scratch / "fetched.bin"
    assert files.download("/home/user/big.bin", fetched, progress=down) == size
    down.check(size)
    assert sha256_of(fetched) == digest
    files.remove("/home/user/big.bin")
    fetched.unlink()
    step("large-file")


def sync_processes(sandbox: Sandbox) -> None:
    done = sandbox.commands.run("echo out; echo err >&2; exit 3")
    assert (done.exit_code, done.stdout, done.stderr) == (3, "out\n", "err\n"), done
    lines: list[str] = []
    streamed = sandbox.commands.run(
        ["python3", "-c", "print('a'); print('b')"], on_stdout=lines.append
    )
    assert "".join(lines) == "a\nb\n" and streamed.exit_code == 0
    cat = sandbox.processes.start("cat", stdin=True, timeout=0, tag="echoer")
    assert cat.pid in {p.pid for p in sandbox.processes.list()}
    sandbox.processes.send_stdin(cat.pid, "to cat\n")
    sandbox.processes.close_stdin(cat.pid)
    ended = sandbox.processes.wait(cat.pid)
    assert ended.exit_code == 0, ended
    with sandbox.processes.stream(cat.pid) as events:
        output = "".join(e.text or "" for e in events if e.type == "stdout")
    assert output == "to cat\n", output
    sleeper = sandbox.processes.start(["sleep", "60"])
    sandbox.processes.kill(sleeper.pid)
    assert sandbox.processes.wait(sleeper.pid).signal == "SIGKILL"
    step("processes")


def sync_runs(sandbox: Sandbox, scratch: Path) -> None:
    run = sandbox.runs.submit(ARTIFACT_CODE, timeout=60)
    assert run.wait(timeout=120).status == "succeeded", run.run
    assert run.run.execution is not None and run.run.execution.results[0].text == "42"
    (artifact,) = run.artifacts
    assert artifact.name.endswith("report.csv"), artifact
    target = scratch / "report.csv"
    assert run.download_artifact(artifact, target) == artifact.size_bytes
    assert target.read_text() == "a,b\n1,2\n"
    assert run.read_artifact(artifact.id) == b"a,b\n1,2\n"
    slow = sandbox.runs.submit("import time; time.sleep(60)")
    slow.cancel()
    assert slow.wait(timeout=60).status == "cancelled"
    assert {r.id for r in sandbox.runs.list()} >= {run.id, slow.id}
    step("runs")


def sync_lifecycle(sandbox: Sandbox, client: Sandcastle, backend: str) -> None:
    sandbox.run_code("kept = 'state'")
    assert sandbox.pause().status == "paused"
    assert sandbox.resume().status == "running"
    assert sandbox.set_timeout(900).timeout_ms == 900_000
    step("pause-resume")
    sandbox.files.write("/home/user/forked.txt", "from the parent")
    if backend != "gvisor":
        for save in (sandbox.hibernate, sandbox.snapshot):
            try:
                save()
            except errors.ValidationError as exc:
                assert "memory snapshots" in exc.detail, exc
            else:
                raise AssertionError(f"{save.__name__} worked on {backend}")
        step("hibernate-refused")
        return
    context = sandbox.run_code("counter = 5").context_id
    assert sandbox.hibernate().status == "paused"
    assert sandbox.resume().status == "running"
    assert sandbox.run_code("counter + 1", context=context).text == "6"
    step("hibernate-resume")
    snapshot = sandbox.snapshot()
    assert snapshot.id in {s.id for s in client.snapshots.list()}
    with Sandbox.create(snapshot=snapshot, client=client) as restored:
        assert restored.files.read_text("/home/user/forked.txt") == "from the parent"
    with sandbox.fork() as fork:
        assert fork.id != sandbox.id
        assert fork.files.read_text("/home/user/forked.txt") == "from the parent"
        # The kernels came along, with their memory, under new context ids.
        answers = [fork.run_code("counter + 1", context=c.id).text for c in fork.contexts.list()]
        assert "6" in answers, answers
        fork.files.write("/home/user/forked.txt", "changed in the fork")
    assert sandbox.files.read_text("/home/user/forked.txt") == "from the parent"
    client.snapshots.delete(snapshot.id)
    step("snapshot-fork")


def sync_listing(client: Sandcastle) -> None:
    made = [Sandbox.create(metadata={"page": str(i)}, client=client) for i in range(3)]
    try:
        listed = [s.id for s in Sandbox.list(client=client, status="running", page_size=1)]
        assert {s.id for s in made} <= set(listed) and len(listed) == len(set(listed))
    finally:
        for sandbox in made:
            sandbox.kill()
    assert any(t.name == "python" for t in client.templates.list())
    step("list")


def sync_tenancy(client: Sandcastle) -> None:
    slug = f"sdk-{uuid.uuid4().hex[:6]}"
    created = client.orgs.create(slug, name="SDK org")
    assert created.org.slug == slug and created.key.key.startswith("sc_")
    with Sandcastle(client.url, created.key.key) as owner:
        org = owner.orgs.use(slug)
        project = org.create_project("web", name="Web")
        assert project.id in {p.id for p in org.projects()}
        workspace = org.create_workspace("ws", project_id=project.id)
        assert workspace.project_id == project.id
        member = org.add_member("dev@example.com", role="member")
        assert org.set_role(member.id, "admin").role == "admin"
        key = org.create_key("ci", member_id=member.id)
        assert key.id in {k.id for k in org.keys()}
        org.revoke_key(key.id)
        with Sandcastle(client.url, key.key, max_retries=0) as revoked:
            try:
                revoked.orgs.list()
            except errors.AuthenticationError:
                pass
            else:
                raise AssertionError("a revoked key still works")
        assert org.credits().balance == org.get().credit_balance
        try:
            owner.orgs.use("default").get()
        except errors.NotFoundError:
            pass
        else:
            raise AssertionError("another org is visible")
    assert client.orgs.use(slug).top_up(10).balance >= 10
    step("tenancy")


async def async_scenario(backend: str, scratch: Path) -> None:
    async with AsyncSandcastle() as client:
        assert (await client.health()).status == "ok"
        step("health")
        async with await AsyncSandbox.create(timeout=600, client=client) as sandbox:
            step("create")
            await async_code_files_processes(sandbox, scratch)
            await async_runs_lifecycle(sandbox, client, backend)
        assert (await AsyncSandbox.connect(sandbox.id, client=client)).status == "destroyed"
        step("killed-on-exit")
        listed = [s.id async for s in AsyncSandbox.list(client=client, page_size=2)]
        assert sandbox.id in listed and len(listed) == len(set(listed))
        orgs = await client.orgs.list()
        assert orgs and (await client.orgs.use(orgs[0].slug).get()).slug == orgs[0].slug
        step("list-and-orgs")


async def async_code_files_processes(sandbox: AsyncSandbox, scratch: Path) -> None:
    seen: list[str] = []

    async def collect(text: str) -> None:  # an async callback is awaited
        seen.append(text)

    result = await sandbox.run_code("print('a')\n1 + 1", on_stdout=collect)
    assert (seen, result.text) == (["a\n"], "2"), (seen, result)
    context = await sandbox.contexts.create()
    await sandbox.run_code("z = 3", context=context.id)
    assert (await sandbox.run_code("z * 2", context=context.id)).text == "6"
    step("run_code")
    local, digest = big_file(scratch)
    up = Progress()
    await sandbox.files.upload(local, "/home/user/big.bin", progress=up)
    up.check(local.stat().st_size)
    fetched = scratch / "fetched-async.bin"
    await sandbox.files.download("/home/user/big.bin", fetched)
    assert sha256_of(fetched) == digest
    await sandbox.files.write("/home/user/t.txt", "text")
    assert await sandbox.files.read_text("/home/user/t.txt") == "text"
    step("files")
    done = await sandbox.commands.run("echo $((6 * 7))")
    assert (done.exit_code, done.stdout) == (0, "42\n")
    started = await sandbox.processes.start(["sh", "-c", "echo bg"])
    assert (await sandbox.processes.wait(started.pid)).exit_code == 0
    async with sandbox.processes.stream(started.pid) as events:
        texts = [e.text async for e in events if e.type == "stdout"]
    assert texts == ["bg\n"], texts
    step("processes")


async def async_runs_lifecycle(
    sandbox: AsyncSandbox, client: AsyncSandcastle, backend: str
) -> None:
    run = await sandbox.runs.submit(ARTIFACT_CODE)
    assert (await run.wait(timeout=120)).status == "succeeded"
    assert await run.read_artifact(run.artifacts[0]) == b"a,b\n1,2\n"
    step("runs")
    assert (await sandbox.pause()).status == "paused"
    assert (await sandbox.resume()).status == "running"
    if backend == "gvisor":
        await sandbox.run_code("kept = 1")
        assert (await sandbox.hibernate()).status == "paused"
        assert (await sandbox.resume()).status == "running"
        fork = await sandbox.fork()
        async with fork:
            assert (await fork.files.read_text("/home/user/t.txt")) == "text"
    step("lifecycle")


def main(argv: list[str]) -> None:
    mode, backend = argv
    with tempfile.TemporaryDirectory() as scratch:
        if mode == "sync":
            sync_scenario(backend, Path(scratch))
        else:
            asyncio.run(async_scenario(backend, Path(scratch)))
    print("scenario complete", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
