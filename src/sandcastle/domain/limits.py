"""Bounds on what a client can make the server store or hold: the user-supplied maps that
travel with sandboxes and executions (``metadata``, ``env_vars``).

Each one is kept in the store, returned in every listing and copied into requests to the agent,
so an unbounded one would let a single client fill the database and the server's memory (a
150 MB ``metadata`` did). The checks are pure; the API applies them through its schemas and
answers a violation with 422 in its envelope, naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: A page of a list whose items carry output (runs) ends once it holds this much, whatever its
#: ``limit``; ``next_cursor`` goes on from there. Other lists are bounded by their ``limit``
#: (at most 200) times their items' own bounds (``metadata`` below).
LIST_MAX_BYTES = 16 * 1024 * 1024

#: ``metadata``: at most this many keys, each at most this long, all of it at most this much JSON.
METADATA_MAX_KEYS = 64
METADATA_MAX_KEY_CHARS = 256
METADATA_MAX_BYTES = 16 * 1024

#: ``env_vars``: at most this many variables, names this long, all of them this much in total
#: (a single variable's value is bounded by the total: the kernel allows 128 KiB for one).
ENV_VARS_MAX_COUNT = 256
ENV_VAR_NAME_MAX_CHARS = 256
ENV_VARS_MAX_BYTES = 128 * 1024


def check_metadata(metadata: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the bound that ``metadata`` exceeds."""
    if len(metadata) > METADATA_MAX_KEYS:
        raise ValueError(f"at most {METADATA_MAX_KEYS} keys (got {len(metadata)})")
    for key in metadata:
        if not key or len(key) > METADATA_MAX_KEY_CHARS:
            raise ValueError(f"keys are 1 to {METADATA_MAX_KEY_CHARS} characters long")
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > METADATA_MAX_BYTES:
        raise ValueError(f"at most {METADATA_MAX_BYTES} bytes as JSON (got {size})")


def check_env_vars(env_vars: Mapping[str, str]) -> None:
    """Raise ``ValueError`` naming the bound or rule that ``env_vars`` breaks."""
    if len(env_vars) > ENV_VARS_MAX_COUNT:
        raise ValueError(f"at most {ENV_VARS_MAX_COUNT} variables (got {len(env_vars)})")
    total = 0
    for name, value in env_vars.items():
        if not name or len(name) > ENV_VAR_NAME_MAX_CHARS:
            raise ValueError(f"names are 1 to {ENV_VAR_NAME_MAX_CHARS} characters long")
        if "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"variable {name[:64]!r}: no '=' in a name, no NUL anywhere")
        total += len(name.encode()) + len(value.encode()) + 2
    if total > ENV_VARS_MAX_BYTES:
        raise ValueError(f"at most {ENV_VARS_MAX_BYTES} bytes in all (got {total})")
