"""Templates from a Dockerfile, built with ``sandcastle template build NAME -f Dockerfile CONTEXT``
on top of the shared test template, then used by a real server on each backend: a package the
Dockerfile ``pip install``ed imports, a ``COPY``ed file reads, ``ENV`` and ``WORKDIR`` reached
the build and ``ENV`` the sandbox's code, and the sandbox user still owns its venv. A failing ``RUN`` names its line and keeps
the previous build."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.executing import run
from tests.e2e_fixtures import backends
from tests.helpers import eventually as wait_for
from tests.helpers import write_wheel
from tests.serverproc import ServerProcess, link_template

DOCKERFILE = """\
# A template for a small tool: its package, its data, its settings.
ARG GREETING=hello
FROM python
ARG GREETING
ENV APP_HOME=/opt/app
WORKDIR $APP_HOME
COPY dist/ ./dist/
COPY --chown=user data/ ./data/
RUN pip install --no-cache-dir --no-index ./dist/greeter-1.0-py3-none-any.whl \\
    && echo "$GREETING from $APP_HOME" > /opt/app/built.txt
USER user
RUN echo "run as $(id -un)" > /opt/app/data/whoami.txt
"""

CHECK = """
import os, pathlib, pwd, greeter
print(greeter.greet())
print(pathlib.Path('/opt/app/built.txt').read_text(), end='')
print(pathlib.Path('/opt/app/data/whoami.txt').read_text(), end='')
print(pathlib.Path('/opt/app/data/notes.txt').read_text())
print(pwd.getpwuid(os.stat('/opt/app/data/notes.txt').st_uid).pw_name)
print(os.access('/opt/venv/lib', os.W_OK))
print(os.environ.get('APP_HOME'))
"""


def build(templates: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandcastle", "template", "build", *args],
        env={**os.environ, "SANDCASTLE_TEMPLATES_DIR": str(templates)},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A templates directory with the shared ``python`` and ``greeter`` built on it."""
    root = tmp_path_factory.mktemp("dockerfile-templates")
    templates = root / "templates"
    link_template(templates, "python")
    context = root / "context"
    (context / "dist").mkdir(parents=True)
    write_wheel(context / "dist" / "greeter-1.0-py3-none-any.whl")
    (context / "data").mkdir()
    (context / "data" / "notes.txt").write_text("copied notes")
    (context / "Dockerfile").write_text(DOCKERFILE)
    built = build(templates, "greeter", "-f", str(context / "Dockerfile"), str(context))
    assert built.returncode == 0, built.stdout + built.stderr
    assert "template greeter ready" in " ".join(built.stderr.split())
    yield templates


def test_a_failing_run_names_its_line_and_keeps_the_previous_build(
    templates: Path, tmp_path: Path
) -> None:
    before = (templates / "greeter" / "manifest.json").read_text()
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python\nRUN echo fine\nRUN printf 'broken-%s\\n' output >&2; exit 3\n")
    failed = build(templates, "greeter", "-f", str(broken))
    assert failed.returncode == 1
    message = " ".join(failed.stderr.split())
    error = message[message.index("error:") :]
    assert "(line 3: RUN printf" in error, error  # the step, by its line
    assert "broken-output" in error.split("last log lines:")[1], error  # and what it said
    assert (templates / "greeter" / "manifest.json").read_text() == before
    unsupported = tmp_path / "Unsupported"
    unsupported.write_text("FROM python\nEXPOSE 8080\n")
    refused = build(templates, "other", "-f", str(unsupported))
    assert refused.returncode == 1 and "line 2: EXPOSE is not supported" in refused.stderr


# One backend: the rebuild test below, and tests/e2e/test_template_builds.py, start sandboxes of
# Dockerfile templates on each.
@pytest.mark.parametrize("backend", backends()[:1])
def test_a_sandbox_of_a_dockerfile_template_has_what_it_built(
    templates: Path, tmp_path: Path, backend: str
) -> None:
    server = running(backend, templates, tmp_path / "data")
    try:
        with server.client() as api:
            created = api.post("/v1/sandboxes", json={"template": "greeter"})
            assert created.status_code == 201, created.text
            result = run(api, created.json()["id"], code=CHECK)
            assert result["error"] is None, result
            assert "".join(result["logs"]["stdout"]).splitlines() == [
                "hi from greeter",
                "hello from /opt/app",
                "run as user",
                "copied notes",
                "user",
                "True",
                "/opt/app",
            ]
            listed = api.get("/v1/templates").json()["items"]
            assert {t["name"] for t in listed} >= {"python", "greeter"}
    finally:
        try:
            server.destroy_all()
        finally:
            server.purge()


def running(backend: str, templates: Path, data: Path, **env: str) -> ServerProcess:
    server = ServerProcess(
        data,
        env={
            "SANDCASTLE_RUNTIME": backend,
            "SANDCASTLE_TEMPLATES_DIR": str(templates),
            "SANDCASTLE_WARM_POOL": "{}",
            **env,
        },
    )
    server.start()
    return server


def build_version(templates: Path, directory: Path, version: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / "Dockerfile").write_text(f"FROM python\nRUN echo {version} > /opt/version\n")
    built = build(templates, "versioned", "-f", str(directory / "Dockerfile"))
    assert built.returncode == 0, built.stdout + built.stderr


def version_in(api: httpx.Client, sandbox_id: str, context: str | None = None) -> str:
    code = "open('/opt/version').read().strip()"
    result = run(api, sandbox_id, code=code, **({"context_id": context} if context else {}))
    assert result["error"] is None, result
    return str(result["items"][0]["text"]).strip("'")


@pytest.mark.parametrize("backend", backends())
def test_a_rebuild_leaves_the_sandboxes_of_the_old_build_working_until_they_end(
    templates: Path, tmp_path: Path, backend: str
) -> None:
    build_version(templates, tmp_path / "context", "v1")
    server = running(
        backend, templates, tmp_path / "data", SANDCASTLE_TEMPLATE_COLLECT_INTERVAL_S="1"
    )
    try:
        with server.client() as api:
            old = api.post("/v1/sandboxes", json={"template": "versioned"}).json()
            first = run(api, old["id"], code="kept = 'state'")
            hibernated = None
            if backend == "gvisor":
                hibernated = api.post("/v1/sandboxes", json={"template": "versioned"}).json()
                run(api, hibernated["id"], code="kept = 'saved'")
                answer = api.post(f"/v1/sandboxes/{hibernated['id']}/hibernate")
                assert answer.status_code == 200, answer.text
            build_version(templates, tmp_path / "context", "v2")  # while they run, and sleep
            retired = list((templates / ".retired" / "versioned").iterdir())
            assert len(retired) == 1
            assert version_in(api, old["id"], first["context_id"]) == "v1"
            assert (
                run(api, old["id"], code="kept", context_id=first["context_id"])["items"][0]["text"]
                == "'state'"
            )
            assert run(api, old["id"], code="import numpy; numpy.__name__")["error"] is None
            new = api.post("/v1/sandboxes", json={"template": "versioned"}).json()
            assert version_in(api, new["id"]) == "v2"
            if hibernated is not None:
                resumed = api.post(f"/v1/sandboxes/{hibernated['id']}/resume")
                assert resumed.status_code == 200, resumed.text
                assert version_in(api, hibernated["id"]) == "v1"
            for sandbox in (old, hibernated, new):
                if sandbox is not None:
                    api.delete(f"/v1/sandboxes/{sandbox['id']}")
            # Nothing runs on the old build any more: it is collected.
            wait_for(lambda: not retired[0].exists(), timeout=30)
            assert (templates / "versioned" / "rootfs").is_dir()
    finally:
        try:
            server.destroy_all()
        finally:
            server.purge()
