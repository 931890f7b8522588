"""The one exception tree of Sandcastle.

Foreign errors (subprocess, kernel, database, socket) are translated into these once, where they
enter; the HTTP layer maps them to statuses and envelope ``type`` names in one table
(``sandcastle.api.errors``), looked up along the exception's MRO.

::

    SandcastleError
    ├── InvalidRequestError            bad input the schema could not catch
    │   ├── FieldError                 ... tied to one request field
    │   └── LimitExceededError         a value outside server-configured bounds
    ├── AuthenticationError            missing, unknown or revoked API key
    ├── ForbiddenError                 authenticated, but not allowed
    ├── NotFoundError                  unknown, or belongs to another tenant
    ├── ConflictError                  the resource's state forbids the operation
    │   ├── AlreadyExistsError
    │   │   └── MemberExistsError      the user is a member of the org already
    │   ├── SandboxBusyError           code is running; the sandbox cannot be saved now
    │   ├── SandboxPausedError         paused while the request waited on its agent
    │   ├── SandboxEndedError          destroyed while the request waited on its agent
    │   └── SandboxMemoryFullError     no memory left for another context
    ├── QuotaExceededError             an org's quota or budget refuses the request
    │   ├── SandboxCapacityExceededError   the org runs its maximum of sandboxes
    │   ├── MemberLimitExceededError   the org has its maximum of members (or more)
    │   └── UsageLimitExceededError    the org has no credits left
    ├── RateLimitedError               the key sent too many requests; retry after a while
    ├── InsufficientStorageError       the host's disk is at its free-space floor
    ├── StoreBusyError                 the database stayed locked; nothing was written
    ├── RuntimeBackendError            the isolation runtime failed (bwrap, cgroups, mounts)
    │   └── TemplateError              a template is missing or its build failed
    ├── AgentError                     the in-sandbox agent is unreachable or broke protocol
    │   ├── AgentUnavailableError      no live link to the agent
    │   └── ProtocolError              a malformed or oversized frame
    └── ConfigurationError             settings that cannot work on this host
"""

from __future__ import annotations


class SandcastleError(Exception):
    """Base of every error Sandcastle raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(SandcastleError):
    """The request is well-formed but its content cannot be accepted."""


class FieldError(InvalidRequestError):
    """Invalid input tied to one named request field."""

    def __init__(self, field: str, message: str, *, location: str = "body") -> None:
        super().__init__(message)
        self.field = field
        self.location = location


class LimitExceededError(InvalidRequestError):
    """A requested value is outside the bounds this server allows."""


class AuthenticationError(SandcastleError):
    """The API key is missing, unknown or revoked."""


class ForbiddenError(SandcastleError):
    """The caller is known but may not do this."""


class NotFoundError(SandcastleError):
    """The resource does not exist for this caller (other tenants' resources included)."""


class ConflictError(SandcastleError):
    """The resource's current state does not allow the operation."""


class AlreadyExistsError(ConflictError):
    """A resource with this identity exists already."""


class MemberExistsError(AlreadyExistsError):
    """The user is already a member of the org."""


class SandboxBusyError(ConflictError):
    """The sandbox is serving requests (code running): its memory cannot be saved now."""


class SandboxPausedError(ConflictError):
    """The sandbox was paused while a request waited on its agent: the code is frozen where it
    was and goes on when the sandbox resumes, but this request no longer waits for it."""


class SandboxEndedError(ConflictError):
    """The sandbox was destroyed while a request waited on its agent."""


class SandboxMemoryFullError(ConflictError):
    """A new kernel was the out-of-memory killer's victim as it started: the sandbox's memory
    holds no further context."""


class QuotaExceededError(SandcastleError):
    """An org's quota or credit budget does not allow the request."""


class SandboxCapacityExceededError(QuotaExceededError):
    """The org already runs as many sandboxes as it may at once."""


class MemberLimitExceededError(QuotaExceededError):
    """The org has as many members as it may have, or the caller is past that limit."""


class UsageLimitExceededError(QuotaExceededError):
    """The org's credit balance is used up."""


class RateLimitedError(SandcastleError):
    """Too many requests with one key; ``retry_after_s`` says when the next one may pass."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InsufficientStorageError(SandcastleError):
    """The host's free disk is below ``min_free_disk_mb``: nothing that would store more (a
    sandbox, a snapshot, a run's artifacts, a build) starts until space is freed."""


class StoreBusyError(SandcastleError):
    """The database stayed locked (or chose this transaction as a deadlock's victim) past the
    busy timeout; nothing was written, and the same request may be sent again."""


class RuntimeBackendError(SandcastleError):
    """The isolation runtime could not do what was asked."""


class TemplateError(RuntimeBackendError):
    """A template is missing, broken, or failed to build."""


class AgentError(SandcastleError):
    """The agent inside a sandbox could not be used."""


class AgentUnavailableError(AgentError):
    """There is no live link to the sandbox's agent."""


class ProtocolError(AgentError):
    """A frame on the agent channel was malformed or too large."""


class ConfigurationError(SandcastleError):
    """The configuration cannot work on this host."""
