"""An org tries to fill the host's disk past its quotas: with artifacts, run after run
(``org_max_artifact_mb``; deleting one makes room), and with snapshots, which outlive their
sandboxes (``org_max_snapshots``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.code_runs import finished, submit
from tests.e2e_fixtures import StoreFactory, running_server
from tests.security.test_host_exposure import _host_bytes
from tests.serverproc import ServerProcess

QUOTA_MB = 4
MAX_SNAPSHOTS = 2


@pytest.fixture(scope="module")
def small_quota(
    tmp_path_factory: pytest.TempPathFactory, backend: str, new_store: StoreFactory
) -> Iterator[ServerProcess]:
    """A server of its own whose orgs may keep ``QUOTA_MB`` of artifacts and
    ``MAX_SNAPSHOTS`` snapshots."""
    with running_server(
        Path(tmp_path_factory.mktemp(f"quota-{backend}")),
        backend,
        **new_store(),
        SANDCASTLE_ORG_MAX_ARTIFACT_MB=str(QUOTA_MB),
        SANDCASTLE_ORG_MAX_SNAPSHOTS=str(MAX_SNAPSHOTS),
    ) as proc:
        yield proc


#: Three files of 1.5 MiB of random bytes (no holes to save anything) per run.
_FILL = (
    "import os\n"
    "for i in range(3):\n"
    "    with open(f'{tag}-{i}.bin', 'wb') as f:\n"
    "        f.write(os.urandom(3 * 2**19))\n"
)


def test_runs_cannot_store_more_than_their_orgs_artifact_quota(small_quota: ServerProcess) -> None:
    with small_quota.client() as api:
        created = api.post("/v1/sandboxes", json={"timeout_ms": 600_000})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        kept: list[dict[str, object]] = []
        for tag in ("a", "b", "c"):
            done = finished(api, sid, submit(api, sid, code=_FILL.replace("{tag}", tag))["id"])
            assert done["status"] == "succeeded", done
            for artifact in done["execution"]["artifacts"]:
                if artifact["sha256"] is None:
                    assert "quota" in artifact["metadata"]["skipped"], artifact
                else:
                    kept.append(artifact)

        held = _host_bytes(small_quota.data_dir / "artifacts")
        assert held <= QUOTA_MB * 2**20, f"the host holds {held} bytes of artifacts"
        assert len(kept) == 2  # 3 MiB of 4: a third file would pass the quota

        gone = api.delete(f"/v1/sandboxes/{sid}/artifacts/{kept[0]['id']}")
        assert gone.status_code == 204, gone.text
        done = finished(api, sid, submit(api, sid, code=_FILL.replace("{tag}", "d"))["id"])
        stored = [a for a in done["execution"]["artifacts"] if a["sha256"] is not None]
        assert len(stored) == 1
        assert api.get(str(kept[0]["download_url"])).status_code == 404


def test_an_org_cannot_keep_more_snapshots_than_its_quota(
    small_quota: ServerProcess, backend: str
) -> None:
    if backend != "gvisor":
        pytest.skip("only gvisor takes snapshots (bwrap refuses them)")
    with small_quota.client() as api:
        created = api.post("/v1/sandboxes", json={"timeout_ms": 600_000})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        taken = [api.post(f"/v1/sandboxes/{sid}/snapshots") for _ in range(MAX_SNAPSHOTS)]
        assert [r.status_code for r in taken] == [201] * MAX_SNAPSHOTS, taken[-1].text
        images = _host_bytes(small_quota.data_dir / "snapshots")

        refused = api.post(f"/v1/sandboxes/{sid}/snapshots")

        assert refused.status_code == 403, refused.text
        assert refused.json()["type"] == "forbidden_error"
        assert str(MAX_SNAPSHOTS) in refused.json()["detail"]
        assert _host_bytes(small_quota.data_dir / "snapshots") == images
        # Deleting one makes room again.
        assert api.delete(f"/v1/snapshots/{taken[0].json()['id']}").status_code == 204
        assert api.post(f"/v1/sandboxes/{sid}/snapshots").status_code == 201
