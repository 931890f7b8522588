"""Every Sandcastle error maps to an HTTP status and a ``type`` the envelope may carry."""

from __future__ import annotations

import inspect

import pytest

from sandcastle import errors
from sandcastle.api.errors import _HTTP_TYPES, ERROR_TABLE, lookup
from sandcastle.runtime.channel import AgentRequestError

#: ``type`` values allowed by the error envelope of ``org-sandboxes-list.txt``.
ALLOWED_TYPES = frozenset(
    {
        "already_exists_error",
        "app_error",
        "authentication_error",
        "conflict_error",
        "aws_error",
        "configuration_error",
        "database_error",
        "dynamodb_error",
        "e2b_error",
        "e2b_rate_limit_error",
        "expired_signature_error",
        "expired_token_error",
        "forbidden_error",
        "group_error",
        "invalid_error",
        "invalid_flag_error",
        "invalid_username_error",
        "mail_error",
        "member_exists_error",
        "member_limit_exceeded_error",
        "migration_lock_timeout_error",
        "not_found_error",
        "oauth_config_error",
        "org_sandbox_capacity_exceeded_error",
        "bad_gateway_error",
        "gateway_timeout_error",
        "s3_error",
        "server_error",
        "task_error",
        "stripe_error",
        "token_error",
        "upgrade_required_error",
        "usage_limit_exceeded_error",
        "user_verification_error",
        "validation_error",
    }
)
#: ``code`` values the same document allows.
ALLOWED_CODES = frozenset({400, 401, 403, 404, 409, 422, 426, 429, 500, 502, 504})

ERROR_CLASSES = sorted(
    (
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.SandcastleError) and cls.__module__ == errors.__name__
    ),
    key=lambda cls: cls.__name__,
)

EXPECTED = {
    errors.SandcastleError: (500, "server_error"),
    errors.InvalidRequestError: (422, "validation_error"),
    errors.FieldError: (422, "validation_error"),
    errors.LimitExceededError: (422, "validation_error"),
    errors.AuthenticationError: (401, "authentication_error"),
    errors.ForbiddenError: (403, "forbidden_error"),
    errors.NotFoundError: (404, "not_found_error"),
    errors.ConflictError: (409, "conflict_error"),
    errors.AlreadyExistsError: (409, "already_exists_error"),
    errors.MemberExistsError: (409, "member_exists_error"),
    errors.SandboxBusyError: (409, "conflict_error"),
    errors.SandboxPausedError: (409, "conflict_error"),
    errors.SandboxEndedError: (409, "conflict_error"),
    errors.SandboxMemoryFullError: (409, "conflict_error"),
    errors.QuotaExceededError: (403, "forbidden_error"),
    errors.SandboxCapacityExceededError: (429, "org_sandbox_capacity_exceeded_error"),
    errors.MemberLimitExceededError: (403, "member_limit_exceeded_error"),
    errors.UsageLimitExceededError: (403, "usage_limit_exceeded_error"),
    errors.StoreBusyError: (504, "database_error"),
    errors.RateLimitedError: (429, "e2b_rate_limit_error"),
    errors.InsufficientStorageError: (500, "server_error"),
    errors.RuntimeBackendError: (500, "server_error"),
    errors.TemplateError: (500, "server_error"),
    errors.AgentError: (502, "bad_gateway_error"),
    errors.AgentUnavailableError: (502, "bad_gateway_error"),
    errors.ProtocolError: (502, "bad_gateway_error"),
    errors.ConfigurationError: (500, "configuration_error"),
    AgentRequestError: (502, "bad_gateway_error"),
}


def test_the_expectations_cover_every_error_class() -> None:
    assert len(ERROR_CLASSES) == 27
    assert set(ERROR_CLASSES) <= set(EXPECTED)


@pytest.mark.parametrize("cls", [*ERROR_CLASSES, AgentRequestError], ids=lambda c: c.__name__)
def test_every_error_maps_to_an_allowed_status_and_type(cls: type[Exception]) -> None:
    instance = cls.__new__(cls)
    status, type_ = lookup(instance)
    assert type_ in ALLOWED_TYPES
    assert status in ALLOWED_CODES
    assert (status, type_) == EXPECTED[cls]


def test_the_table_only_names_allowed_values() -> None:
    for cls, (status, type_) in ERROR_TABLE.items():
        assert type_ in ALLOWED_TYPES, cls
        assert status in ALLOWED_CODES, cls
    for status, type_ in _HTTP_TYPES.items():
        assert type_ in ALLOWED_TYPES, status


def test_lookup_follows_the_mro_to_the_nearest_entry() -> None:
    class Sub(errors.AlreadyExistsError):
        pass

    class Unlisted(errors.SandcastleError):
        pass

    assert lookup(Sub("x")) == (409, "already_exists_error")
    assert lookup(Unlisted("x")) == (500, "server_error")
    assert lookup(ValueError("foreign")) == (500, "server_error")


def test_every_error_class_is_drawn_in_the_module_docstring() -> None:
    tree = errors.__doc__ or ""
    for cls in ERROR_CLASSES:
        assert cls.__name__ in tree, cls


def test_error_messages_and_fields_are_kept() -> None:
    error = errors.FieldError("language", "unsupported language 'cobol'")
    assert (error.field, error.message, str(error)) == (
        "language",
        "unsupported language 'cobol'",
        "unsupported language 'cobol'",
    )
    request_error = AgentRequestError("context_not_found", "no context ctx_1")
    assert (request_error.code, request_error.message) == ("context_not_found", "no context ctx_1")
