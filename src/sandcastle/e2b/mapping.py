"""Pure rules between E2B's vocabulary and ours: states and template names."""

from __future__ import annotations

from typing import Literal

from sandcastle.config import Settings
from sandcastle.domain.sandbox import SandboxStatus

#: E2B's stock templates: on this server they mean the default template unless the operator
#: maps them (``SANDCASTLE_E2B_TEMPLATES``).
STOCK_TEMPLATES = frozenset(
    {"base", "code-interpreter", "code-interpreter-v1", "code-interpreter-beta"}
)


def template_for(settings: Settings, template_id: str) -> str:
    """Our template for an E2B ``templateID`` (a name of ours passes through unchanged)."""
    mapped = settings.e2b_templates.get(template_id)
    if mapped is not None:
        return mapped
    return settings.default_template if template_id in STOCK_TEMPLATES else template_id


def e2b_state(status: SandboxStatus) -> Literal["running", "paused"] | None:
    """E2B's state of a sandbox; None for one that ended (E2B does not know those)."""
    if status in (SandboxStatus.CREATING, SandboxStatus.RUNNING):
        return "running"
    if status is SandboxStatus.PAUSED:
        return "paused"
    return None
