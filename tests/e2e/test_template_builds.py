"""Templates built through the API (``POST /v1/templates``) by a real server, on each backend: an
org sends a Dockerfile and a context archive, follows the build's log, and its sandboxes import
what it ``pip install``ed and read what it ``COPY``ed; a second template starts ``FROM`` it.
Another org neither sees nor uses the template, nor its build. The build's ``RUN`` steps run in
gVisor: they reach the internet's stand-in but not the server's port, the host's loopback or
the host's files. A failing ``RUN`` reports its line; an org builds one template at a time."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandcastle_sdk import Sandcastle
from sandcastle_sdk.errors import TemplateBuildFailedError
from tests.e2e.executing import run
from tests.e2e_fixtures import backends
from tests.helpers import PROBE, new_org, write_wheel
from tests.serverproc import ServerProcess, link_template

#: Read at import: a test's environment holds no SANDCASTLE_* variables.
BACKENDS = backends()

DOCKERFILE = """\
FROM python
ARG GREETING
COPY dist/ /opt/dist/
COPY notes.txt /opt/app/notes.txt
RUN pip install --no-cache-dir --no-index /opt/dist/greeter-1.0-py3-none-any.whl \\
    && echo "$GREETING" > /opt/app/greeting.txt && echo "installed greeter"
"""

CHECK = """
import greeter, pathlib
print(greeter.greet())
print(pathlib.Path('/opt/app/notes.txt').read_text())
print(pathlib.Path('/opt/app/greeting.txt').read_text().strip())
"""

#: What a build's RUN tries of the host: the server's port and the host's loopback (through
#: slirp4netns's gateway and directly), the server's data directory, and the server's variables.
PROBE_SCRIPT = (
    PROBE
    + """
import os, sys
port, data = int(sys.argv[1]), sys.argv[2]
print('probe', probe('10.0.2.2', port), probe('127.0.0.1', port),
      os.path.exists(data), any(k.startswith('SANDCASTLE_') for k in os.environ))
"""
)


def context_archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def post_build(
    api: httpx.Client,
    name: str,
    dockerfile: str,
    context: bytes | None = None,
    build_args: dict[str, str] | None = None,
    **defaults: int,
) -> httpx.Response:
    files: dict[str, Any] = {"dockerfile": ("Dockerfile", dockerfile.encode())}
    if context is not None:
        files["context"] = ("context.tar.gz", context, "application/gzip")
    data = {"name": name, "build_args": json.dumps(build_args or {})}
    data |= {key: str(value) for key, value in defaults.items()}
    return api.post("/v1/templates", data=data, files=files)


def followed(api: httpx.Client, location: str) -> tuple[list[str], dict[str, Any]]:
    """The build's log lines and its final record, from the followed log."""
    lines: list[str] = []
    with api.stream("GET", location + "/logs", timeout=600) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("application/x-ndjson")
        events = [json.loads(line) for line in stream.iter_lines() if line]
    lines = [e["text"] for e in events if e["type"] == "log"]
    assert events[-1]["type"] == "end"
    return lines, events[-1]["build"]


def built(api: httpx.Client, name: str, dockerfile: str, **kwargs: Any) -> dict[str, Any]:
    answer = post_build(api, name, dockerfile, **kwargs)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "building"
    _, build = followed(api, answer.headers["location"])
    assert build["status"] == "ready", build["error"]
    return build


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    templates = tmp_path_factory.mktemp("api-templates") / "templates"
    link_template(templates, "python")
    return templates


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, templates: Path, tmp_path: Path) -> Iterator[Any]:
    server = ServerProcess(
        tmp_path / "data",
        env={
            "SANDCASTLE_RUNTIME": request.param,
            "SANDCASTLE_TEMPLATES_DIR": str(templates),
            "SANDCASTLE_WARM_POOL": "{}",
        },
    )
    server.start()
    try:
        yield server
    finally:
        try:
            server.destroy_all()
        finally:
            server.purge()


def test_an_org_builds_its_own_template_and_only_its_sandboxes_use_it(
    server: ServerProcess,
) -> None:
    with server.client() as admin:
        _, a_key = new_org(admin, "builder")
        _, b_key = new_org(admin, "other")
    wheel = server.data_dir / "greeter.whl"
    write_wheel(wheel)
    context = context_archive(
        {"dist/greeter-1.0-py3-none-any.whl": wheel.read_bytes(), "notes.txt": b"copied notes"}
    )
    with server.client(a_key) as a, server.client(b_key) as b:
        answer = post_build(
            a, "tool", DOCKERFILE, context, {"GREETING": "hello there"}, memory_mb=768
        )
        assert answer.status_code == 202, answer.text
        location = answer.headers["location"]
        assert location == f"/v1/templates/tool/builds/{answer.json()['build_id']}"
        lines, build = followed(a, location)
        assert build["status"] == "ready", build["error"]
        assert "installed greeter" in lines
        assert build["name"] == "tool" and build["public"] is False
        assert build["size_bytes"] > 100 * 2**20
        status = a.get(location).json()
        assert status["status"] == "ready" and "installed greeter" in status["logs"]

        created = a.post("/v1/sandboxes", json={"template": "tool"})
        assert created.status_code == 201, created.text
        assert created.json()["template"] == build["template_id"]
        assert created.json()["config"]["memory_mb"] == 768  # the template's default
        result = run(a, created.json()["id"], code=CHECK)
        assert result["error"] is None, result
        assert "".join(result["logs"]["stdout"]).splitlines() == [
            "hi from greeter",
            "copied notes",
            "hello there",
        ]
        listed = {t["name"]: t for t in a.get("/v1/templates").json()["items"]}
        assert listed["tool"]["public"] is False and listed["python"]["public"] is True

        # Another org: not listed, not usable by name or by key, its build not found.
        assert "tool" not in {t["name"] for t in b.get("/v1/templates").json()["items"]}
        for template in ("tool", build["template_id"]):
            refused = b.post("/v1/sandboxes", json={"template": template})
            assert refused.status_code == 404, refused.text
        assert b.get(location).status_code == 404
        assert b.get(location + "/logs").status_code == 404
        assert post_build(b, "mine", "FROM tool\n").status_code == 422
        assert b.delete("/v1/templates/tool").status_code == 404


def test_a_build_reaches_nothing_of_the_host_and_a_failing_run_names_its_line(
    server: ServerProcess, templates: Path
) -> None:
    if server.extra_env["SANDCASTLE_RUNTIME"] != BACKENDS[0]:
        pytest.skip("builds run in gVisor whatever the backend: one server shows it")
    with server.client() as admin:
        _, key = new_org(admin, "prober")
    context = templates.parent / "probe-context"
    context.mkdir()
    (context / "probe.py").write_text(PROBE_SCRIPT)
    (context / "Dockerfile").write_text(
        "FROM python\nARG PORT\nARG DATA\nCOPY probe.py /opt/probe.py\n"
        "RUN python /opt/probe.py $PORT $DATA\nUSER user\n"
        "RUN python /opt/probe.py $PORT $DATA\n"
    )
    # Through the CLI (on our SDK): the context directory sent as an archive, the log followed.
    pushed = subprocess.run(
        [
            sys.executable, "-m", "sandcastle", "template", "push", "base", "-f",
            str(context / "Dockerfile"), "--build-arg", f"PORT={server.port}", "--build-arg",
            f"DATA={server.data_dir}", "--url", server.url, "--key", key,
        ],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "template base ready" in pushed.stdout
    # The log a tenant reads names its own commands, not the host's paths or tools.
    assert "/run/sandcastle" not in pushed.stderr and str(templates) not in pushed.stderr
    assert "$ /bin/sh -c python /opt/probe.py" in pushed.stderr
    logged = pushed.stderr.splitlines()
    probes = [line for line in logged if line.startswith("probe ")]
    assert len(probes) == 2, pushed.stderr
    for line in probes:
        _, via_gateway, loopback, data_seen, env_seen = line.split()
        assert via_gateway != "open" and loopback != "open", line
        assert (data_seen, env_seen) == ("False", "False"), line
    with server.client(key) as api:
        # A second template FROM the org's own one: it has both templates' files.
        answer = post_build(api, "child", "FROM base\nRUN echo child > /opt/child.txt\n")
        assert answer.status_code == 202, answer.text
        # One build under way per org: a second is refused while it runs.
        second = post_build(api, "other", "FROM base\nRUN true\n")
        assert second.status_code == 403, second.text
        _, child = followed(api, answer.headers["location"])
        assert child["status"] == "ready", child["error"]
        created = api.post("/v1/sandboxes", json={"template": "child"})
        assert created.status_code == 201, created.text
        layered = run(
            api,
            created.json()["id"],
            code="import os; (open('/opt/child.txt').read(), os.path.exists('/opt/probe.py'))",
        )
        assert layered["items"][0]["text"] == "('child\\n', True)", layered

        # A RUN that fails: its line and output, through the SDK's error.
        with Sandcastle(server.url, key) as client, pytest.raises(TemplateBuildFailedError) as err:
            client.templates.build(
                "broken", "FROM child\nRUN echo fine\nRUN echo broken-output >&2; exit 3\n"
            )
        failed = err.value.build
        assert failed.status == "failed" and failed.error is not None
        assert "(line 3: RUN echo broken-output" in failed.error, failed.error
        assert "broken-output" in failed.error.split("last log lines:")[1]
        names = {t["name"] for t in api.get("/v1/templates").json()["items"]}
        assert "broken" not in names and {"base", "child"} <= names

        refused = post_build(api, "bad", "FROM python\nEXPOSE 80\n")
        assert refused.status_code == 422 and "line 2: EXPOSE" in refused.text
        escaping = context_archive({"../outside.txt": b"x"})
        refused = post_build(api, "bad", "FROM python\n", context=escaping)
        assert refused.status_code == 422 and "outside" in refused.text, refused.text
        # Nothing is left of the failed build, nor of the uploads.
        assert not list(templates.glob(".build-*")) and not list(templates.glob(".uploads/*"))
