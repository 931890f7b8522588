"""Leap0's unmodified Python SDK (``leap0`` 0.8.0, in a venv of its own: ``make leap0-sdk``)
against a real server on each backend, over HTTPS as a Leap0 user reaches it:
``tests/leap0/scenario.py`` creates a sandbox, creates a code context and executes code on the
sandbox's own host, writes, reads, lists and deletes files, gets the sandbox and deletes it,
asserting as it goes and printing each step it passed.

The server serves TLS itself (``--tls-cert``/``--tls-key``) with a wildcard certificate the test
makes; the SDK reaches ``{id}.sandbox.test`` through a CONNECT tunnel (``tests/e2e/leap0_env.py``)
and trusts the test's CA through ``SSL_CERT_FILE``. Nothing in the SDK is patched but the
``TypedDict`` fix its own import needs on Python 3.11 (``docs/LEAP0.md``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.leap0_env import ConnectProxy, make_certificates
from tests.serverproc import REPO, ServerProcess

DOMAIN = "sandbox.test"
LEAP0_PYTHON = REPO / "build" / "leap0-venv" / "bin" / "python"
SCENARIO = REPO / "tests" / "leap0" / "scenario.py"
STEPS = ["create", "code", "files", "get", "delete"]


@pytest.fixture
def tls_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[ServerProcess]:
    """A server of its own: HTTPS, and ``sandbox.test`` as its sandbox domain."""
    tls = make_certificates(tmp_path_factory.mktemp("leap0-tls"), DOMAIN)
    proc = ServerProcess(
        tmp_path_factory.mktemp(f"leap0-server-{backend}"),
        env={"SANDCASTLE_RUNTIME": backend, "SANDCASTLE_SANDBOX_DOMAIN": DOMAIN},
        tls=tls,
    )
    proc.start()
    try:
        yield proc
    finally:
        try:
            proc.destroy_all()
        finally:
            proc.purge()


def sdk_environment(server: ServerProcess, proxy: ConnectProxy) -> dict[str, str]:
    """The machine's environment without anything that would steer the SDK elsewhere (proxies,
    CA bundles, Leap0's and OpenTelemetry's settings), and then the test's."""
    assert server.tls is not None
    steering = ("LEAP0_", "OTEL_", "SSL_CERT_", "REQUESTS_CA_")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(steering) and not name.lower().endswith("_proxy")
    }
    return {
        **env,
        "LEAP0_API_KEY": server.admin_key,
        "LEAP0_BASE_URL": server.url,
        "LEAP0_SANDBOX_DOMAIN": DOMAIN,
        "LEAP0_SDK_OTEL_ENABLED": "false",
        "SSL_CERT_FILE": str(server.tls.ca),
        # Sandbox hosts through the tunnel; the control plane, at 127.0.0.1, directly.
        "HTTPS_PROXY": proxy.url,
        "https_proxy": proxy.url,
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }


def test_the_unmodified_sdk_runs_its_scenario_over_https(tls_server: ServerProcess) -> None:
    if not LEAP0_PYTHON.exists():
        pytest.fail("Leap0's SDK is needed in its own venv: run `make test` (make leap0-sdk)")
    with ConnectProxy(DOMAIN, tls_server.port) as proxy:
        done = subprocess.run(
            [str(LEAP0_PYTHON), str(SCENARIO)],
            env=sdk_environment(tls_server, proxy),
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [line["step"] for line in lines] == STEPS
    # The sandbox calls really went to the sandbox's own host, by the id the SDK was given.
    assert proxy.asked and set(proxy.asked) == {f"{lines[0]['id']}.{DOMAIN}:443"}
