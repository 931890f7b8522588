"""Artifacts of code runs through HTTP: copied out of real sandboxes, hashed, served safely."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from tests.e2e.code_runs import finished, submit
from tests.e2e.executing import new_context, run

CSP = "default-src 'none'; sandbox"

WRITE_FILES = """
import hashlib, json, os
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pandas as pd

os.makedirs('out', exist_ok=True)
pd.DataFrame({'name': ['a', '<b>'], 'value': [1, 2]}).to_csv('out/table.csv', index=False)
plt.plot([1, 3, 2]); plt.savefig('chart.png'); plt.close()
with open('blob.bin', 'wb') as f:
    f.write(os.urandom(3 * 1024 * 1024 + 17))
with open('page.html', 'w') as f:
    f.write('<script>alert(1)</script><h1>hi</h1>')
with open('.secret', 'w') as f:
    f.write('hidden files are not artifacts')
with open('/tmp/elsewhere.txt', 'w') as f:
    f.write('outside the working directory')
names = ['out/table.csv', 'chart.png', 'blob.bin', 'page.html']
print(json.dumps({n: hashlib.sha256(open(n, 'rb').read()).hexdigest() for n in names}))
"""


def artifacts_of(run_body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in run_body["execution"]["artifacts"]}


def test_files_a_run_writes_are_artifacts_with_matching_sha256(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["id"]
    ctx = new_context(api, sid, cwd="/home/user/work")["id"]
    run(api, sid, code="open('before.txt', 'w').write('old')", context_id=ctx)
    done = finished(api, sid, submit(api, sid, context_id=ctx, code=WRITE_FILES)["id"])
    assert done["status"] == "succeeded", done
    in_sandbox = json.loads(done["execution"]["logs"]["stdout"][0])
    artifacts = artifacts_of(done)
    assert sorted(artifacts) == sorted(in_sandbox)  # not before.txt, .secret or /tmp/…
    for name, artifact in artifacts.items():
        assert artifact["sha256"] == in_sandbox[name], name
        assert artifact["context_id"] == ctx
        assert artifact["execution_count"] == done["execution"]["execution_count"]
        assert artifact["metadata"]["path"] == f"/home/user/work/{name}"
        body = api.get(artifact["download_url"])
        assert body.status_code == 200
        assert hashlib.sha256(body.content).hexdigest() == in_sandbox[name]
        assert len(body.content) == artifact["size_bytes"]
        assert body.headers["x-content-type-options"] == "nosniff"
    assert artifacts["chart.png"]["mime_type"] == "image/png"
    assert artifacts["out/table.csv"]["mime_type"] == "text/csv"
    assert artifacts["blob.bin"]["preview_url"] is None

    # Changing a file makes it an artifact again; leaving it alone does not.
    changed = finished(
        api,
        sid,
        submit(api, sid, context_id=ctx, code="open('before.txt', 'a').write(' and new')")["id"],
    )
    assert sorted(artifacts_of(changed)) == ["before.txt"]


def test_previews_render_under_a_restrictive_policy(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["id"]
    done = finished(api, sid, submit(api, sid, code=WRITE_FILES)["id"])
    artifacts = artifacts_of(done)
    for name in ("out/table.csv", "chart.png", "page.html"):
        preview = api.get(artifacts[name]["preview_url"])
        assert preview.status_code == 200, (name, preview.text)
        assert preview.headers["content-security-policy"] == CSP
        assert preview.headers["x-content-type-options"] == "nosniff"
    table = api.get(artifacts["out/table.csv"]["preview_url"])
    assert table.headers["content-type"].startswith("text/html")
    assert "<th>name</th><th>value</th>" in table.text
    assert "<td>&lt;b&gt;</td><td>2</td>" in table.text
    chart = api.get(artifacts["chart.png"]["preview_url"])
    assert chart.headers["content-type"] == "image/png"
    assert chart.content.startswith(b"\x89PNG")
    page = api.get(artifacts["page.html"]["preview_url"])
    assert page.headers["content-type"].startswith("text/html")
    assert page.text == "<script>alert(1)</script><h1>hi</h1>"


def test_artifacts_outlive_the_sandbox(api: httpx.Client) -> None:
    sid = api.post("/v1/sandboxes", json={}).json()["id"]
    code = "open('result.txt', 'w').write('survives ' * 1000)"
    done = finished(api, sid, submit(api, sid, code=code)["id"])
    (artifact,) = done["execution"]["artifacts"]
    assert api.delete(f"/v1/sandboxes/{sid}").status_code == 200
    assert api.get(f"/v1/sandboxes/{sid}").json()["status"] == "destroyed"
    body = api.get(artifact["download_url"])
    assert body.status_code == 200
    assert body.content == b"survives " * 1000
    assert hashlib.sha256(body.content).hexdigest() == artifact["sha256"]
    listed = api.get(f"/v1/sandboxes/{sid}/code/runs").json()["items"]
    assert listed[0]["execution"]["artifacts"][0]["sha256"] == artifact["sha256"]


def test_another_key_cannot_read_artifacts(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    sid = sandbox["id"]
    done = finished(api, sid, submit(api, sid, code="open('x.txt', 'w').write('x')")["id"])
    (artifact,) = done["execution"]["artifacts"]
    anonymous = httpx.get(artifact["download_url"])
    assert anonymous.status_code == 401
    forged = httpx.get(artifact["download_url"], headers={"Authorization": "Bearer sk_nope"})
    assert forged.status_code == 401
    other_sandbox = artifact["download_url"].replace(sid, "sb_00000000")
    assert api.get(other_sandbox).status_code == 404
