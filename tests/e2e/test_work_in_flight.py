"""Work in flight when its sandbox is paused, hibernated or deleted, its context restarted, or
the server restarted: every request ends
promptly with its documented result
(docs/LIFECYCLE.md, "Work in flight"), never hangs, and nothing is left half-made.

Each test starts one of every kind of work at once — an execute, a streamed execute and a run,
each in its own context and held at a gate file, a background process held at the same gate
and read through its stream, and an upload held between two chunks — then does the one thing
to the sandbox, and checks every outcome.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.code_runs import finished, gate_code, get_run, open_gate, submit, wait_status
from tests.e2e.executing import ndjson_events, new_context, run
from tests.e2e_fixtures import running_server
from tests.helpers import eventually as wait_for
from tests.serverproc import ServerProcess

#: Every request must have answered this long after the event (none takes more than ~1 s).
PROMPTLY_S = 20.0
CHUNK = 1 << 20
UPLOAD = "/home/user/in-flight/upload.bin"
#: A background process held at the same gate, read through its stream.
GATED_PROCESS = {
    "shell": "echo started; while [ ! -e /tmp/gate ]; do sleep 0.05; done; echo done",
    "timeout_ms": 0,
}


def marked_gate(marker: str) -> str:
    """A cell that says it started (a marker file) and then waits at ``/tmp/gate``."""
    return f"open('/tmp/{marker}', 'w').close()\nprint('started', flush=True)\n" + gate_code(
        "gate", then=f"'{marker} done'"
    )


@dataclass
class InFlight:
    """One of each kind of work, held in flight; ``outcomes`` once they answered."""

    server: ServerProcess
    sandbox_id: str
    contexts: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    pid: int = 0
    body_started: threading.Event = field(default_factory=threading.Event)
    body_gate: threading.Event = field(default_factory=threading.Event)
    process_read: threading.Event = field(default_factory=threading.Event)
    pool: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(4)
    )
    futures: dict[str, concurrent.futures.Future[Any]] = field(default_factory=dict)

    def start(self, api: httpx.Client) -> None:
        sid = self.sandbox_id
        for kind in ("execute", "stream", "run"):
            self.contexts[kind] = new_context(api, sid)["id"]
        self.futures["execute"] = self.pool.submit(self._execute)
        self.futures["stream"] = self.pool.submit(self._stream)
        self.futures["upload"] = self.pool.submit(self._upload)
        started = api.post(f"/v1/sandboxes/{sid}/processes", json=GATED_PROCESS)
        assert started.status_code == 201, started.text
        self.pid = started.json()["pid"]
        self.futures["process"] = self.pool.submit(self._read_process)
        self.run_id = submit(
            api, sid, context_id=self.contexts["run"], code=marked_gate("run"), timeout_secs=120
        )["id"]
        wait_status(api, sid, self.run_id, {"running"})
        for marker in ("execute", "stream", "run"):
            assert wait_for(partial(self._exists, api, f"/tmp/{marker}"), timeout=60), marker
        assert self.body_started.wait(60), "the upload did not start"
        assert self.process_read.wait(60), "the process's reader got nothing"

    def outcomes(self) -> dict[str, Any]:
        """What each request answered (the upload's body is let go first)."""
        self.body_gate.set()
        _, waiting = concurrent.futures.wait(self.futures.values(), timeout=PROMPTLY_S)
        assert not waiting, f"still waiting: {[k for k, f in self.futures.items() if f in waiting]}"
        self.pool.shutdown()
        return {kind: future.result() for kind, future in self.futures.items()}

    def _exists(self, api: httpx.Client, path: str) -> bool:
        url = f"/v1/sandboxes/{self.sandbox_id}/files/stat"
        return api.get(url, params={"path": path}).status_code == 200

    def _execute(self) -> httpx.Response | httpx.TransportError:
        body = {"code": marked_gate("execute"), "context_id": self.contexts["execute"]}
        url = f"/v1/sandboxes/{self.sandbox_id}/execute"
        with self.server.client() as client:
            try:
                return client.post(url, json={**body, "timeout_ms": 120_000})
            except httpx.TransportError as exc:  # the server closed it: an answer too
                return exc

    def _stream(self) -> tuple[int, list[dict[str, Any]]] | httpx.TransportError:
        body = {"code": marked_gate("stream"), "context_id": self.contexts["stream"]}
        url = f"/v1/sandboxes/{self.sandbox_id}/execute/stream"
        with self.server.client() as client:
            try:
                with client.stream("POST", url, json=body) as response:
                    return response.status_code, list(ndjson_events(response))
            except httpx.TransportError as exc:
                return exc

    def _read_process(self) -> tuple[int, list[dict[str, Any]]] | httpx.TransportError:
        url = f"/v1/sandboxes/{self.sandbox_id}/processes/{self.pid}/stream"
        events: list[dict[str, Any]] = []
        with self.server.client() as client:
            try:
                with client.stream("GET", url) as response:
                    for event in ndjson_events(response):
                        events.append(event)
                        if event["type"] == "stdout":
                            self.process_read.set()
                    return response.status_code, events
            except httpx.TransportError as exc:
                return exc

    def _upload(self) -> httpx.Response | httpx.TransportError:
        def body() -> Iterator[bytes]:
            yield b"a" * CHUNK
            self.body_started.set()
            self.body_gate.wait(PROMPTLY_S * 2)
            yield b"b" * CHUNK

        url = f"/v1/sandboxes/{self.sandbox_id}/files/content"
        with self.server.client() as client:
            try:
                return client.put(url, params={"path": UPLOAD}, content=body())
            except httpx.TransportError as exc:
                return exc


def refused(answer: Any, type_: str, says: str) -> None:
    """``answer`` is an error in our envelope of ``type_`` whose detail contains ``says``."""
    assert isinstance(answer, httpx.Response), answer
    assert answer.status_code in (404, 409), answer.text
    assert answer.json()["type"] == type_, answer.text
    assert says in answer.json()["detail"], answer.text


def stream_failed(answer: Any, name: str) -> None:
    """``answer`` is a whole stream whose one error event is ``name``."""
    assert isinstance(answer, tuple), answer
    status, events = answer
    assert status == 200
    types = [e["type"] for e in events if e["type"] != "keepalive"]
    assert types[-1] == "end_of_execution", events
    errors = [e for e in events if e["type"] == "error"]
    assert [e["name"] for e in errors] == [name], events


def reader_cut(answer: Any, name: str) -> None:
    """A process stream that ended with the platform's ``error`` event ``name`` (no ``end``:
    the process was not over)."""
    assert isinstance(answer, tuple), answer
    status, events = answer
    assert status == 200
    last = [e for e in events if e["type"] != "keepalive"][-1]
    assert (last["type"], last.get("name")) == ("error", name), events


def process_ended(answer: Any) -> None:
    """A process stream that saw the whole output and the exit."""
    assert isinstance(answer, tuple), answer
    status, events = answer
    assert status == 200
    text = "".join(e["text"] for e in events if e["type"] == "stdout")
    assert text == "started\ndone\n", events
    assert events[-1]["type"] == "end" and events[-1]["process"]["exit_code"] == 0, events


def no_upload_left(api: httpx.Client, sandbox_id: str) -> None:
    """Neither the target nor a part file of the cut upload is in the sandbox."""

    def clean() -> bool:
        listing = api.get(
            f"/v1/sandboxes/{sandbox_id}/files", params={"path": str(Path(UPLOAD).parent)}
        )
        assert listing.status_code in (200, 404), listing.text
        return listing.status_code == 404 or listing.json()["entries"] == []

    assert wait_for(clean, timeout=10), "the cut upload left something behind"


@pytest.fixture
def work(api: httpx.Client, server: ServerProcess) -> Iterator[Callable[[], InFlight]]:
    made: list[InFlight] = []

    def start() -> InFlight:
        created = api.post("/v1/sandboxes", json={"timeout_ms": 600_000})
        assert created.status_code == 201, created.text
        flight = InFlight(server, created.json()["id"])
        made.append(flight)
        flight.start(api)
        return flight

    yield start
    for flight in made:
        flight.body_gate.set()
        flight.pool.shutdown(wait=False, cancel_futures=True)
        api.delete(f"/v1/sandboxes/{flight.sandbox_id}")


def test_pause_answers_everything_in_flight_and_the_code_goes_on_at_the_resume(
    api: httpx.Client, work: Callable[[], InFlight]
) -> None:
    flight = work()
    sid = flight.sandbox_id
    assert api.post(f"/v1/sandboxes/{sid}/pause").status_code == 200
    answered = flight.outcomes()

    refused(answered["execute"], "conflict_error", "paused while this ran")
    stream_failed(answered["stream"], "SandboxPausedError")
    refused(answered["upload"], "conflict_error", "paused while this ran")
    reader_cut(answered["process"], "SandboxPausedError")
    ran = finished(api, sid, flight.run_id)
    assert ran["status"] == "failed", ran
    assert ran["failure_reason"].startswith("the sandbox was paused while the run was running")

    assert api.post(f"/v1/sandboxes/{sid}/resume").status_code == 200
    no_upload_left(api, sid)  # its abort waited for the thaw
    # Frozen, not interrupted: each cell finishes once the gate opens, then its context is free.
    open_gate(api, sid, "gate")
    for kind in ("execute", "stream", "run"):
        after = run(api, sid, code="'free'", context_id=flight.contexts[kind])
        assert after["items"] == [{"is_primary": True, "text": "'free'"}], (kind, after)
    with api.stream("GET", f"/v1/sandboxes/{sid}/processes/{flight.pid}/stream") as again:
        process_ended((again.status_code, list(ndjson_events(again))))  # it went on too


def test_hibernate_is_refused_while_anything_runs_and_nothing_is_disturbed(
    api: httpx.Client, work: Callable[[], InFlight], backend: str
) -> None:
    if backend != "gvisor":
        pytest.skip("only gVisor saves memory")
    flight = work()
    sid = flight.sandbox_id
    refused(api.post(f"/v1/sandboxes/{sid}/hibernate"), "conflict_error", "running code")
    assert api.get(f"/v1/sandboxes/{sid}").json()["status"] == "running"
    open_gate(api, sid, "gate")
    answered = flight.outcomes()

    assert answered["execute"].status_code == 200, answered["execute"].text
    assert answered["execute"].json()["items"][-1]["text"] == "'execute done'"
    status, events = answered["stream"]
    assert status == 200 and not [e for e in events if e["type"] == "error"], events
    assert {"type": "result", "text": "'stream done'"}.items() <= events[-2].items(), events
    assert answered["upload"].status_code == 201, answered["upload"]
    assert finished(api, sid, flight.run_id)["status"] == "succeeded"
    process_ended(answered["process"])
    size = api.get(f"/v1/sandboxes/{sid}/files/stat", params={"path": UPLOAD}).json()["size"]
    assert size == 2 * CHUNK
    hibernated = api.post(f"/v1/sandboxes/{sid}/hibernate")  # and once it is all done, it can
    assert hibernated.status_code == 200, hibernated.text


def test_delete_answers_everything_in_flight_at_once(
    api: httpx.Client, work: Callable[[], InFlight]
) -> None:
    flight = work()
    sid = flight.sandbox_id
    started = time.monotonic()
    assert api.delete(f"/v1/sandboxes/{sid}").status_code == 200
    answered = flight.outcomes()
    assert time.monotonic() - started < PROMPTLY_S

    refused(answered["execute"], "conflict_error", "destroyed")
    stream_failed(answered["stream"], "SandboxEndedError")
    upload = answered["upload"]
    if isinstance(upload, httpx.Response):  # else the server closed it: also an answer
        refused(upload, "conflict_error", "destroyed")
    reader_cut(answered["process"], "SandboxEndedError")
    ran = finished(api, sid, flight.run_id)
    assert ran["status"] == "cancelled" and ran["failure_reason"] == "the sandbox was destroyed"


def test_restarting_a_context_ends_its_work_and_no_other(
    api: httpx.Client, work: Callable[[], InFlight]
) -> None:
    flight = work()
    sid = flight.sandbox_id
    for kind in ("execute", "stream", "run"):
        restarted = api.post(f"/v1/sandboxes/{sid}/contexts/{flight.contexts[kind]}/restart")
        assert restarted.status_code == 200, restarted.text
    open_gate(api, sid, "gate")  # for the process, which no context restart touches
    answered = flight.outcomes()

    assert answered["execute"].status_code == 200, answered["execute"].text
    assert answered["execute"].json()["error"]["name"] == "ContextRestartedError"
    stream_failed(answered["stream"], "ContextRestartedError")
    ran = finished(api, sid, flight.run_id)
    assert ran["status"] == "failed", ran
    assert ran["execution"]["error"]["name"] == "ContextRestartedError", ran
    # The upload and the process belong to no context.
    assert answered["upload"].status_code == 201, answered["upload"]
    process_ended(answered["process"])
    for kind in ("execute", "stream", "run"):  # fresh kernels, at once usable
        after = run(api, sid, code="'fresh'", context_id=flight.contexts[kind])
        assert after["items"] == [{"is_primary": True, "text": "'fresh'"}]


def test_a_server_restart_cuts_every_request_and_the_sandbox_is_whole_after(
    tmp_path: Path, backend: str
) -> None:
    with running_server(tmp_path / "data", backend) as server:
        with server.client() as api:
            created = api.post("/v1/sandboxes", json={"timeout_ms": 600_000})
            assert created.status_code == 201, created.text
            flight = InFlight(server, created.json()["id"])
            flight.start(api)
        server.kill9()
        answered = flight.outcomes()
        for kind, answer in answered.items():
            assert isinstance(answer, httpx.TransportError), (kind, answer)
        server.start()
        with server.client() as api:
            sid = flight.sandbox_id
            assert api.get(f"/v1/sandboxes/{sid}").json()["status"] == "running"
            ran = finished(api, sid, flight.run_id)
            assert ran["status"] == "failed", ran
            assert "server restarted" in ran["failure_reason"]
            no_upload_left(api, sid)
            # The agent interrupted what it was serving when the server's end went away.
            for kind in ("execute", "stream", "run"):
                after = run(api, sid, code="'alive'", context_id=flight.contexts[kind])
                assert after["items"] == [{"is_primary": True, "text": "'alive'"}], after
            assert get_run(api, sid, flight.run_id)["completed_at"] is not None
            # The process belongs to the sandbox, not to the server: it ran on, and its whole
            # output is there for a reader after the restart.
            process = f"/v1/sandboxes/{sid}/processes/{flight.pid}"
            assert api.get(process).json()["running"] is True
            open_gate(api, sid, "gate")
            with api.stream("GET", f"{process}/stream") as again:
                process_ended((again.status_code, list(ndjson_events(again))))
