"""The request bodies of Leap0's calls, as its SDK sends them (``docs/LEAP0.md``).

Unknown fields and wrongly typed values are refused (400 naming the field) rather than
guessed around; a field this server cannot honour (object-storage mounts, a custom network
policy, line-based reads) is refused with a message naming it rather than silently dropped.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sandcastle.api.bounded import EnvVars
from sandcastle.api.request_body import Integer, Language, RequestBody
from sandcastle.api.routes.files import PATH_LIMITS


class NetworkPolicyBody(RequestBody):
    mode: Literal["allow-all", "deny-all", "custom"]
    allow_domains: list[str] | None = None
    allow_cidrs: list[str] | None = None
    transforms: list[dict[str, object]] | None = None

    @model_validator(mode="after")
    def _refuse_custom(self) -> NetworkPolicyBody:
        # Sandboxes here have the internet or not; there are no per-domain rules to apply.
        if self.mode == "custom":
            raise ValueError(
                "mode 'custom' is not supported by this server: use allow-all or deny-all"
            )
        return self


class CreateSandboxBody(RequestBody):
    template_name: str = Field(default="system/debian:bookworm", min_length=1, max_length=64)
    vcpu: Integer | None = Field(default=None, ge=1)
    #: MiB.
    memory: Integer | None = Field(default=None, ge=1)
    #: Seconds until the sandbox is deleted (or paused, with ``auto_pause``).
    timeout: Integer | None = Field(default=None, ge=1)
    auto_pause: bool = False
    env_vars: EnvVars = None
    network_policy: NetworkPolicyBody | None = None
    mounts: list[dict[str, object]] | None = None

    @model_validator(mode="after")
    def _refuse_mounts(self) -> CreateSandboxBody:
        if self.mounts:
            raise ValueError("mounts (object storage) are not supported by this server")
        return self


class ContextBody(RequestBody):
    language: Language = "python"
    cwd: str | None = Field(default=None, **PATH_LIMITS)


class ReadFileBody(RequestBody):
    path: str = Field(**PATH_LIMITS)
    #: Byte offset to start from.
    offset: Integer | None = Field(default=None, ge=0)
    #: Most bytes to return.
    limit: Integer | None = Field(default=None, ge=0)
    head: Integer | None = None
    tail: Integer | None = None

    @model_validator(mode="after")
    def _refuse_lines(self) -> ReadFileBody:
        # Lines would mean reading the whole file into the server to count them.
        if self.head is not None or self.tail is not None:
            raise ValueError("head and tail (reading by lines) are not supported by this server")
        return self


class ListBody(RequestBody):
    path: str = Field(**PATH_LIMITS)
    recursive: bool = False
    exclude: list[str] | None = None

    @model_validator(mode="after")
    def _refuse_walks(self) -> ListBody:
        if self.recursive or self.exclude:
            raise ValueError("recursive listings and exclude are not supported by this server")
        return self


class DeleteBody(RequestBody):
    path: str = Field(**PATH_LIMITS)
    recursive: bool = False
