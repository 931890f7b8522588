"""Pure rules between Leap0's vocabulary and ours: sandbox ids, states, template names, and the
sandbox as Leap0's SDK reads it.

Leap0's SDK puts the sandbox id into a host name, ``https://{id}.{sandbox_domain}``. Our ids
(``sb_1a2b3c4d``) hold ``_``, which no DNS label may, and which OpenSSL refuses to match against
a wildcard certificate; so Leap0 is handed the ``sb-1a2b3c4d`` form, the one our host routing
accepts, and every Leap0 route takes either form back.
"""

from __future__ import annotations

from typing import Any, Literal

from sandcastle.api.hostrouting import label_to_sandbox_id
from sandcastle.api.schemas import rfc3339
from sandcastle.config import Settings
from sandcastle.domain import ids
from sandcastle.domain.sandbox import Sandbox, SandboxStatus, TimeoutAction

#: Leap0's stock templates (its SDK's default is the first): on this server they mean the
#: default template. Any other name is one of ours.
STOCK_TEMPLATES = frozenset({"system/debian:bookworm", "system/code-interpreter:v0.1.0"})

Leap0State = Literal["starting", "running", "paused"]


def public_id(sandbox_id: str) -> str:
    """The DNS-label form of one of our sandbox ids: ``sb_1a2b3c4d`` → ``sb-1a2b3c4d``."""
    return sandbox_id.replace(ids.SANDBOX_PREFIX, "sb-", 1)


def internal_id(value: str) -> str | None:
    """Our id for ``sb-1a2b3c4d`` or ``sb_1a2b3c4d`` (any case, as a host name lower-cases
    it); None for anything else."""
    return label_to_sandbox_id(value.strip().lower())


def template_for(settings: Settings, template_name: str) -> str:
    name = template_name.strip()
    return settings.default_template if name in STOCK_TEMPLATES else name


def leap0_state(status: SandboxStatus) -> Leap0State | None:
    """Leap0's state of a sandbox; None for one that ended (not found, as on E2B's surface)."""
    if status is SandboxStatus.CREATING:
        return "starting"
    if status is SandboxStatus.RUNNING:
        return "running"
    if status is SandboxStatus.PAUSED:
        return "paused"
    return None


def sandbox_out(sandbox: Sandbox, state: Leap0State) -> dict[str, Any]:
    """The create and get answer. The SDK passes ``vcpu``, ``memory``, ``disk`` and ``timeout``
    through ``int()``: a ``null`` would break it, so a sandbox without a deadline has no
    ``timeout`` key at all."""
    body: dict[str, Any] = {
        "id": public_id(sandbox.id),
        "template_id": sandbox.template,
        "vcpu": sandbox.config.vcpus,
        "memory": sandbox.config.memory_mb,
        "disk": sandbox.config.disk_mb,
        "state": state,
        "auto_pause": sandbox.timeout_action is TimeoutAction.HIBERNATE,
        "created_at": rfc3339(sandbox.created_at),
        "network_policy": {"mode": "allow-all" if sandbox.internet else "deny-all"},
    }
    if sandbox.timeout_ms is not None:
        body["timeout"] = max(1, sandbox.timeout_ms // 1000)
    return body
