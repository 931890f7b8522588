"""Identifiers: a short prefix naming the kind, then random hex."""

from __future__ import annotations

import re
import secrets

SANDBOX_PREFIX = "sb_"
CONTEXT_PREFIX = "ctx_"
SNAPSHOT_PREFIX = "snap_"

#: A sandbox id, for embedding in other patterns.
SANDBOX_ID_PATTERN = r"sb_[0-9a-f]{8}"
_SANDBOX_ID = re.compile(rf"^{SANDBOX_ID_PATTERN}$")


def new_sandbox_id() -> str:
    return SANDBOX_PREFIX + secrets.token_hex(4)


def new_context_id() -> str:
    return CONTEXT_PREFIX + secrets.token_hex(8)


def new_snapshot_id() -> str:
    """Names a memory image: a snapshot, or the image of a hibernated sandbox."""
    return SNAPSHOT_PREFIX + secrets.token_hex(8)


def is_sandbox_id(value: str) -> bool:
    return _SANDBOX_ID.match(value) is not None
