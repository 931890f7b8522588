"""The one user a sandbox has, as E2B's clients name it."""

from __future__ import annotations

import base64
import binascii

from sandcastle.errors import InvalidRequestError

#: E2B's default user has the same name.
SANDBOX_USER = "user"


def check_user(username: str | None) -> None:
    """Commands and file operations run as the sandbox's one user; naming another is an error."""
    if username not in (None, "", SANDBOX_USER):
        raise InvalidRequestError(
            f"user {username!r} does not exist here: sandboxes have one user, {SANDBOX_USER!r}"
        )


def check_basic_user(authorization: str | None) -> None:
    """E2B's clients name the user of a call as ``Authorization: Basic base64(user:)``."""
    if not authorization:
        return
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequestError("Authorization: Basic is not base64 of user:") from exc
    check_user(decoded.partition(":")[0])
