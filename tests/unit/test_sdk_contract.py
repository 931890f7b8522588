"""The SDK agrees with the server: its models with the committed OpenAPI document
(spec/openapi.json, itself checked against the served one), its exception tree with the
server's error table, and its synchronous face with the asynchronous one it is generated from."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from sandcastle.api.errors import ERROR_TABLE
from sandcastle_sdk import errors as sdk_errors
from sandcastle_sdk import models

REPO = Path(__file__).resolve().parents[2]
SCHEMAS: dict[str, Any] = json.loads((REPO / "spec" / "openapi.json").read_text())["components"][
    "schemas"
]

#: SDK model → the schema(s) of the document it reads (a union's members for stream events).
MODEL_SCHEMAS: dict[type[BaseModel], tuple[str, ...]] = {
    models.SandboxInfo: ("SandboxOut",),
    models.SandboxConfig: ("ConfigOut",),
    models.SandboxNetwork: ("NetworkBody",),
    models.WarmPoolCheckout: ("WarmPoolCheckoutOut",),
    models.Snapshot: ("SnapshotOut",),
    models.SnapshotContext: ("SnapshotContextOut",),
    models.Template: ("TemplateOut",),
    models.TemplateBuild: ("BuildOut",),
    models.PoolStatus: ("PoolStatusOut",),
    models.Health: ("HealthOut",),
    models.FileInfo: ("FileInfoOut",),
    models.Listing: ("ListingOut",),
    models.ProcessInfo: ("ProcessOut",),
    models.ProcessResult: ("ProcessRunOut",),
    models.ProcessEvent: ("ProcessEventDoc",),
    models.Limits: ("LimitsOut",),
    models.Org: ("OrgOut",),
    models.Project: ("ProjectOut",),
    models.Workspace: ("WorkspaceOut",),
    models.Member: ("MemberOut",),
    models.Key: ("KeyOut",),
    models.NewKey: ("NewKeyOut",),
    models.OrgCreated: ("OrgCreatedOut",),
    models.Transaction: ("TransactionOut",),
    models.Credits: ("CreditsOut",),
    models.Context: ("ContextOut",),
    models.ExecutionError: ("ErrorOut",),
    models.Logs: ("LogsOut",),
    models.Result: ("ExecuteItemOut",),
    models.Execution: ("ExecuteOut",),
    models.StreamEvent: ("StreamEventDoc",),
    models.Artifact: ("ArtifactOut",),
    models.RunResult: ("RunResultOut",),
    models.RunExecution: ("RunExecutionOut",),
    models.Run: ("RunOut",),
}


def schema_fields(name: str) -> tuple[set[str], set[str]]:
    """(every property, the required ones) of a schema, or of all members of a union."""
    schema = SCHEMAS[name]
    if "oneOf" in schema:
        members = [ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]]
        parts = [schema_fields(member) for member in members]
        always = set.intersection(*(p[1] for p in parts)) | {
            schema["discriminator"]["propertyName"]
        }
        return set().union(*(p[0] for p in parts)), always
    return set(schema.get("properties", {})), set(schema.get("required", []))


def model_fields(model: type[BaseModel]) -> tuple[set[str], set[str]]:
    names = {field.alias or name for name, field in model.model_fields.items()}
    required = {
        field.alias or name for name, field in model.model_fields.items() if field.is_required()
    }
    return names, required


def test_every_model_of_the_sdk_is_checked_against_the_document() -> None:
    exported = {
        value
        for value in vars(models).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value is not models.base.Model
    }
    assert exported == set(MODEL_SCHEMAS)


@pytest.mark.parametrize("model", list(MODEL_SCHEMAS), ids=lambda m: m.__name__)
def test_a_model_has_the_fields_of_its_schema_and_requires_no_more(model: type[BaseModel]) -> None:
    (schema,) = MODEL_SCHEMAS[model]
    properties, required = schema_fields(schema)
    names, model_required = model_fields(model)
    assert names == properties, f"missing {properties - names}, unknown {names - properties}"
    # A field the server may leave out must not be one the SDK cannot do without.
    assert model_required <= required, model_required - required


#: Server error types with a class of their own in the SDK.
OWN_CLASS = {
    "usage_limit_exceeded_error": sdk_errors.UsageLimitExceededError,
    "member_limit_exceeded_error": sdk_errors.MemberLimitExceededError,
    "member_exists_error": sdk_errors.MemberExistsError,
    "already_exists_error": sdk_errors.AlreadyExistsError,
    "org_sandbox_capacity_exceeded_error": sdk_errors.SandboxCapacityExceededError,
    "database_error": sdk_errors.GatewayTimeoutError,
    "bad_gateway_error": sdk_errors.BadGatewayError,
}
#: Server error types the SDK knows by their status alone.
BY_STATUS = {
    401: sdk_errors.AuthenticationError,
    403: sdk_errors.ForbiddenError,
    404: sdk_errors.NotFoundError,
    409: sdk_errors.ConflictError,
    422: sdk_errors.ValidationError,
    429: sdk_errors.RateLimitError,
    500: sdk_errors.ServerError,
}


@pytest.mark.parametrize(("status", "type_"), sorted(set(ERROR_TABLE.values())), ids=str)
def test_every_error_the_server_answers_lands_on_its_branch(status: int, type_: str) -> None:
    cls = sdk_errors.error_class(status, type_)
    assert cls is OWN_CLASS.get(type_, BY_STATUS.get(status)), (status, type_, cls)


def test_a_generic_type_at_a_specific_status_keeps_the_status_class() -> None:
    assert sdk_errors.error_class(413, "invalid_error") is sdk_errors.PayloadTooLargeError
    assert sdk_errors.error_class(418, "not_found_error") is sdk_errors.APIError
    assert sdk_errors.error_class(503, "") is sdk_errors.ServerError


def test_the_synchronous_face_is_what_the_generator_writes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "generate_sync", REPO / "sdk" / "python" / "tools" / "generate_sync.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    written = generator.generate(tmp_path)
    committed = REPO / "sdk" / "python" / "src" / "sandcastle_sdk" / "_sync"
    assert written, "nothing generated"
    for path in written:
        assert path.read_text() == (committed / path.name).read_text(), (
            f"_sync/{path.name} is stale: run `make sdk-sync`"
        )
    hand_written = {p.name for p in committed.glob("*.py")} - {p.name for p in written}
    assert hand_written == {"_io.py"}
