"""The bodies of E2B's control plane, as its SDKs send and read them (camelCase, seconds).

Requests take the fields E2B documents; a field this server cannot honour (a custom network,
MCP servers, volumes, IAM) is refused with a message naming it rather than silently dropped,
and fields it does not know at all are ignored, as E2B's own API does.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sandcastle.api.bounded import EnvVars, Metadata
from sandcastle.api.request_body import Integer

#: What E2B's API reports as the daemon's version: its SDKs turn features on by it. 0.5.7 has
#: everything this server serves (stdin, ``CloseStdin``, octet-stream uploads) and nothing it
#: does not (file metadata, watch entries).
ENVD_VERSION = "0.5.7"
CLIENT_ID = "sandcastle"
#: Request fields that ask for something this server does not do.
UNSUPPORTED_CREATE_FIELDS = ("mcp", "network", "iam", "volumeMounts", "autoPauseMemory")


class E2BBody(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)

    def unsupported(self, names: tuple[str, ...]) -> list[str]:
        """Those of ``names`` the client set to something (``null`` and empty are nothing)."""
        extra = self.model_extra or {}
        return [name for name in names if extra.get(name) not in (None, {}, [], False)]


class AutoResume(BaseModel):
    model_config = ConfigDict(extra="allow")
    enabled: bool = False


class NewSandboxBody(E2BBody):
    template_id: str = Field(alias="templateID", min_length=1, max_length=64)
    #: Seconds until the sandbox is killed (or paused, with ``autoPause``).
    timeout: Integer | None = Field(default=None, ge=0)
    auto_pause: bool = Field(default=False, alias="autoPause")
    auto_resume: AutoResume | None = Field(default=None, alias="autoResume")
    secure: bool | None = None
    allow_internet_access: bool | None = None
    metadata: Metadata = Field(default_factory=dict)
    env_vars: EnvVars = Field(default=None, alias="envVars")


class TimeoutBody(E2BBody):
    timeout: Integer = Field(ge=0)


class ConnectBody(E2BBody):
    timeout: Integer | None = Field(default=None, ge=0)


class RefreshBody(E2BBody):
    duration: Integer | None = Field(default=None, ge=0)


class ResumeBody(E2BBody):
    timeout: Integer | None = Field(default=None, ge=0)
    auto_pause: bool = Field(default=False, alias="autoPause")


class SandboxOut(BaseModel):
    """``POST /sandboxes`` and ``…/connect``: how to reach the sandbox."""

    model_config = ConfigDict(populate_by_name=True)

    template_id: str = Field(serialization_alias="templateID")
    sandbox_id: str = Field(serialization_alias="sandboxID")
    client_id: str = Field(default=CLIENT_ID, serialization_alias="clientID")
    alias: str | None = None
    envd_version: str = Field(default=ENVD_VERSION, serialization_alias="envdVersion")
    envd_access_token: str | None = Field(default=None, serialization_alias="envdAccessToken")
    traffic_access_token: str | None = Field(default=None, serialization_alias="trafficAccessToken")
    domain: str | None = None


class ListedSandboxOut(BaseModel):
    template_id: str = Field(serialization_alias="templateID")
    alias: str | None = None
    sandbox_id: str = Field(serialization_alias="sandboxID")
    client_id: str = Field(default=CLIENT_ID, serialization_alias="clientID")
    started_at: str = Field(serialization_alias="startedAt")
    end_at: str = Field(serialization_alias="endAt")
    cpu_count: int = Field(serialization_alias="cpuCount")
    memory_mb: int = Field(serialization_alias="memoryMB")
    disk_size_mb: int = Field(serialization_alias="diskSizeMB")
    metadata: dict[str, Any] = Field(default_factory=dict)
    state: Literal["running", "paused"]
    envd_version: str = Field(default=ENVD_VERSION, serialization_alias="envdVersion")


class SandboxDetailOut(ListedSandboxOut):
    envd_access_token: str | None = Field(default=None, serialization_alias="envdAccessToken")
    domain: str | None = None
    allow_internet_access: bool = Field(serialization_alias="allowInternetAccess")
    lifecycle: dict[str, Any] | None = None


class MetricOut(BaseModel):
    timestamp: str
    timestamp_unix: int = Field(serialization_alias="timestampUnix")
    cpu_count: int = Field(serialization_alias="cpuCount")
    cpu_used_pct: float = Field(serialization_alias="cpuUsedPct")
    mem_used: int = Field(serialization_alias="memUsed")
    mem_total: int = Field(serialization_alias="memTotal")
    mem_cache: int = Field(serialization_alias="memCache")
    disk_used: int = Field(serialization_alias="diskUsed")
    disk_total: int = Field(serialization_alias="diskTotal")
