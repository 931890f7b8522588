"""Pointing E2B's unmodified SDKs at a test server, the way a user switches over
(``docs/E2B.md``): two URLs and a key in the environment."""

from __future__ import annotations

from tests.serverproc import ServerProcess


def e2b_environment(server: ServerProcess) -> dict[str, str]:
    return {
        "E2B_API_URL": server.url,
        "E2B_SANDBOX_URL": server.url,
        "E2B_API_KEY": server.admin_key,
    }
