"""A member's role in an org: what it may do is in ``docs/TENANCY.md``."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
