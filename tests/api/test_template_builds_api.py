"""``POST /v1/templates`` refuses what it cannot build before anything runs, in the documented
envelope: a form without a name or a Dockerfile, a bad name, an unsupported instruction (by its
line), a context archive leading out or holding devices, build arguments that are no JSON
object; public templates are the operators', an org's the owners' and admins'. An org's own
template is its sandboxes' alone, and a build's record is its org's alone.

What a real build does (its RUN steps in gVisor, its log, a failing line) is in
``tests/e2e/test_template_builds.py``."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from typing import Any

import httpx
import pytest

from sandcastle.domain.clock import utcnow
from sandcastle.runtime.templates import records
from sandcastle.runtime.templates.catalogue import org_key
from sandcastle.runtime.templates.records import BuildRecord, BuildStatus
from tests.api.conftest import Harness, assert_envelope, write_template


def tar_of(*members: tuple[str, bytes, bytes]) -> bytes:
    """(name, type, data) members as a tar archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = data.decode()
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def post(
    client: httpx.AsyncClient,
    fields: dict[str, str],
    dockerfile: str | None = "FROM python\nRUN true\n",
    context: bytes | None = None,
) -> httpx.Response:
    files: dict[str, Any] = {}
    if dockerfile is not None:
        files["dockerfile"] = ("Dockerfile", dockerfile.encode())
    if context is not None:
        files["context"] = ("context.tar", context)
    return await client.post("/v1/templates", data=fields, files=files or None)


@pytest.fixture
async def owner(harness: Harness) -> tuple[dict[str, Any], str]:
    return await harness.add_org("builders")


@pytest.mark.parametrize(
    ("fields", "dockerfile", "context", "field", "says"),
    [
        ({}, "FROM python\n", None, "name", "no 'name'"),
        (
            {"name": "tool"},
            None,
            tar_of(("a.txt", tarfile.REGTYPE, b"a")),
            "dockerfile",
            "no 'dockerfile'",
        ),
        ({"name": "../up"}, "FROM python\n", None, "name", "template name"),
        ({"name": "tool"}, "FROM python\nEXPOSE 80\n", None, None, "line 2: EXPOSE"),
        ({"name": "tool"}, "FROM nowhere\n", None, None, "FROM nowhere"),
        ({"name": "tool"}, "FROM python\nCOPY a.txt /a\n", None, None, "COPY needs a build"),
        ({"name": "tool", "build_args": "[1]"}, "FROM python\n", None, "build_args", "object"),
        ({"name": "tool", "public": "maybe"}, "FROM python\n", None, "public", "true or false"),
        ({"name": "tool", "vcpus": "99"}, "FROM python\n", None, "vcpus", "between 1 and"),
        ({"name": "tool", "memory_mb": "lots"}, "FROM python\n", None, "memory_mb", "integer"),
        ({"name": "tool"}, "FROM python\n", b"no tar", None, "not a readable tar"),
        (
            {"name": "tool"},
            "FROM python\n",
            tar_of(("../escape", tarfile.REGTYPE, b"x")),
            None,
            "refused",
        ),
        (
            {"name": "tool"},
            "FROM python\n",
            tar_of(("link", tarfile.SYMTYPE, b"/etc/shadow")),
            None,
            "refused",
        ),
        (
            {"name": "tool"},
            "FROM python\n",
            tar_of(("tty", tarfile.CHRTYPE, b"")),
            None,
            "device",
        ),
    ],
    ids=[
        "no-name", "no-dockerfile", "bad-name", "unsupported", "unknown-base", "copy-no-context",
        "build-args", "public-flag", "vcpus-bound", "memory-integer", "not-tar", "dotdot", "absolute-link", "device",
    ],
)  # fmt: skip
async def test_what_cannot_be_built_is_refused_before_the_build_starts(
    harness: Harness,
    owner: tuple[dict[str, Any], str],
    fields: dict[str, str],
    dockerfile: str | None,
    context: bytes | None,
    field: str | None,
    says: str,
) -> None:
    async with harness.as_key(owner[1]) as client:
        body = assert_envelope(
            await post(client, fields, dockerfile, context), 422, "validation_error"
        )
    assert says in body["detail"], body
    if field is not None:
        assert body["errors"][0]["loc"] == ["body", field], body
    templates = harness.settings.resolved_templates_dir
    # Nothing is left of the request: no record, no unpacked context, no upload.
    assert not list((templates / records.BUILDS).glob("*"))
    assert not list((templates / ".uploads").glob("*"))


async def test_an_oversized_dockerfile_is_refused(
    harness: Harness, owner: tuple[dict[str, Any], str]
) -> None:
    async with harness.as_key(owner[1]) as client:
        huge = "FROM python\n" + "# padding\n" * 30_000
        body = assert_envelope(await post(client, {"name": "tool"}, huge), 422, "validation_error")
    assert "over 262144 bytes" in body["detail"]


async def test_public_templates_are_the_operators_and_an_orgs_its_owners_and_admins(
    harness: Harness, owner: tuple[dict[str, Any], str]
) -> None:
    async with harness.as_key(owner[1]) as client:
        refused = await post(client, {"name": "tool", "public": "true"})
        assert_envelope(refused, 403, "forbidden_error")
        member = await client.post(
            "/v1/orgs/builders/members", json={"email": "m@b.test", "role": "member"}
        )
        key = await client.post("/v1/orgs/builders/keys", json={"member_id": member.json()["id"]})
    async with harness.as_key(key.json()["key"]) as member_client:
        assert_envelope(await post(member_client, {"name": "tool"}), 403, "forbidden_error")


async def test_an_orgs_own_template_is_used_by_its_name_and_shadows_a_public_one(
    harness: Harness, owner: tuple[dict[str, Any], str]
) -> None:
    org, key = owner
    templates = harness.settings.resolved_templates_dir
    write_template(templates, org_key("python", org["id"]))
    write_template(templates, org_key("tool", str(uuid.uuid4())))  # another org's
    async with harness.as_key(key) as client:
        created = await client.post("/v1/sandboxes", json={"template": "python"})
        assert created.status_code == 201, created.text
        assert created.json()["template"] == org_key("python", org["id"])
        listed = (await client.get("/v1/templates")).json()["items"]
        assert sorted((t["name"], t["public"]) for t in listed) == [
            ("python", False),
            ("python", True),
        ]
        refused = await client.post("/v1/sandboxes", json={"template": "tool"})
        assert_envelope(refused, 404, "not_found_error")
    # Others still get the public one.
    other = await harness.create(template="python")
    assert other["template"] == "python"


async def test_a_templates_defaults_are_what_its_sandboxes_get_unless_they_ask(
    harness: Harness, owner: tuple[dict[str, Any], str]
) -> None:
    org, key = owner
    directory = write_template(harness.settings.resolved_templates_dir, org_key("big", org["id"]))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["defaults"] = {"vcpus": 2, "memory_mb": 1024}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    async with harness.as_key(key) as client:
        (listed,) = [
            t for t in (await client.get("/v1/templates")).json()["items"] if t["name"] == "big"
        ]
        assert listed["defaults"] == {"vcpus": 2, "memory_mb": 1024}
        plain = await client.post("/v1/sandboxes", json={"template": "big"})
        assert (plain.json()["config"]["vcpus"], plain.json()["config"]["memory_mb"]) == (2, 1024)
        asked = await client.post("/v1/sandboxes", json={"template": "big", "memory_mb": 512})
        assert (asked.json()["config"]["vcpus"], asked.json()["config"]["memory_mb"]) == (2, 512)


async def test_a_builds_record_is_shown_to_its_org_only(
    harness: Harness, owner: tuple[dict[str, Any], str]
) -> None:
    org, key = owner
    templates = harness.settings.resolved_templates_dir
    build = BuildRecord(
        str(uuid.uuid4()),
        org_key("tool", org["id"]),
        org["id"],
        BuildStatus.FAILED,
        utcnow(),
        finished_at=utcnow(),
        error="line 2: RUN false",
    )
    records.save(templates, build)
    records.log_path(templates, build.build_id).write_text("step 1\nstep 2 failed\n")
    path = f"/v1/templates/tool/builds/{build.build_id}"
    async with harness.as_key(key) as client:
        shown = (await client.get(path)).json()
        assert (shown["status"], shown["error"], shown["public"]) == (
            "failed",
            "line 2: RUN false",
            False,
        )
        assert shown["logs"] == "step 1\nstep 2 failed\n"
        async with client.stream("GET", path + "/logs") as stream:
            events = [json.loads(line) async for line in stream.aiter_lines() if line]
        assert [e.get("text") for e in events[:-1]] == ["step 1", "step 2 failed"]
        assert events[-1]["type"] == "end" and events[-1]["build"]["status"] == "failed"
        assert_envelope(await client.get("/v1/templates/other/builds/" + build.build_id), 404,
                        "not_found_error")  # fmt: skip
    assert_envelope(await harness.client.get(path), 404, "not_found_error")
    assert_envelope(await harness.client.get(path + "/logs"), 404, "not_found_error")
