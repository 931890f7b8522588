"""A template pinned to bubblewrap on a gVisor server: its sandboxes run on bubblewrap, the
others on gVisor, side by side, through a server crash and restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.executing import run
from tests.e2e_fixtures import backends
from tests.serverproc import ServerProcess, link_template

pytestmark = pytest.mark.skipif(
    not {"gvisor", "bwrap"} <= set(backends()), reason="needs both backends"
)

KERNEL_RELEASE = "import platform; print(platform.release())"


def kernel_release(api: httpx.Client, sandbox_id: str) -> str:
    result = run(api, sandbox_id, code=KERNEL_RELEASE)
    assert result["error"] is None, result
    return "".join(result["logs"]["stdout"]).strip()


def test_a_template_pinned_to_bwrap_runs_there_beside_gvisor_sandboxes(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    link_template(templates, "python")
    link_template(templates, "light")
    pinned = subprocess.run(
        [sys.executable, "-m", "sandcastle", "template", "pin", "light", "bwrap"],
        env={**os.environ, "SANDCASTLE_TEMPLATES_DIR": str(templates)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert "pinned to bwrap" in pinned.stderr
    server = ServerProcess(
        tmp_path / "data",
        env={
            "SANDCASTLE_RUNTIME": "gvisor",
            "SANDCASTLE_TEMPLATES_DIR": str(templates),
            "SANDCASTLE_WARM_POOL": "{}",
        },
    )
    server.start()
    try:
        with server.client() as api:
            health = api.get("/v1/health").json()
            assert (health["runtime"], health["runtimes"]) == ("gvisor", ["gvisor", "bwrap"])
            listed = api.get("/v1/templates").json()["items"]
            assert {t["name"]: t["runtime"] for t in listed} == {"light": "bwrap", "python": None}

            light = api.post("/v1/sandboxes", json={"template": "light"}).json()["id"]
            strong = api.post("/v1/sandboxes", json={"template": "python"}).json()["id"]
            # bubblewrap shares the host's kernel; gVisor's Sentry reports its own.
            assert kernel_release(api, light) == os.uname().release
            assert kernel_release(api, strong) != os.uname().release
            contexts = {
                sandbox_id: run(api, sandbox_id, code=f"mark = {mark!r}")["context_id"]
                for sandbox_id, mark in ((light, "bwrap"), (strong, "gvisor"))
            }
            refused = api.post(f"/v1/sandboxes/{light}/hibernate")
            assert refused.status_code == 422, refused.text
            assert "bwrap backend" in refused.json()["detail"]

        server.kill9()
        server.start()
        with server.client() as api:
            for sandbox_id, mark in ((light, "bwrap"), (strong, "gvisor")):
                result = run(api, sandbox_id, code="print(mark)", context_id=contexts[sandbox_id])
                assert result["logs"]["stdout"] == [f"{mark}\n"], result
            for sandbox_id in (light, strong):
                assert api.delete(f"/v1/sandboxes/{sandbox_id}").json()["status"] == "destroyed"
                assert not (tmp_path / "data" / "sandboxes" / sandbox_id).exists()
    finally:
        server.purge()
