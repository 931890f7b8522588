"""What the synchronous and asynchronous faces share about HTTP: configuration, the error
answer → exception step, the retry policy and the NDJSON line reader. Nothing here does I/O."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from sandcastle_sdk import errors

DEFAULT_URL = "http://127.0.0.1:8321"
URL_ENV = "SANDCASTLE_URL"
KEY_ENV = "SANDCASTLE_API_KEY"

# Methods whose repetition changes nothing: a dropped connection may retry them.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class Settings:
    """Where the server is and how to talk to it; unset values come from the environment."""

    url: str
    api_key: str | None
    timeout: float
    max_retries: int

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
    ) -> Settings:
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        return cls(
            url=(url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/"),
            api_key=api_key if api_key is not None else os.environ.get(KEY_ENV) or None,
            timeout=timeout,
            max_retries=max_retries,
        )

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": "sandcastle-sdk-python"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def httpx_timeout(self) -> httpx.Timeout:
        # Reads wait as long as the server holds an answer (an execution may take minutes and
        # is bounded by its own timeout there); connecting and writing do not.
        return httpx.Timeout(self.timeout, read=None)


def error_for(response: httpx.Response) -> errors.APIError:
    """The exception for an error answer whose body has been read."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return errors.from_answer(
        response.status_code, body, retry_after=retry_after(response.headers.get("Retry-After"))
    )


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def backoff(attempt: int, advised: float | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, …): the server's advice when it gave
    one (capped at a minute), else exponential from 0.25 s with jitter, capped at 8 s."""
    if advised is not None:
        return min(advised, 60.0)
    return min(8.0, 0.25 * 2.0 ** (attempt - 1)) * (0.5 + random.random() / 2)


def should_retry(method: str, *, status: int | None, error: Exception | None) -> bool:
    """Whether a failed attempt may be repeated. A 429 was not acted on, so any method may;
    a connection that could not be opened sent nothing, so any method may; a connection that
    broke mid-request may have done the work, so only idempotent methods may."""
    if status is not None:
        return status == 429
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return isinstance(error, httpx.TransportError) and method.upper() in IDEMPOTENT


def ndjson_event(line: str) -> dict[str, Any] | None:
    """One NDJSON line as an event; None for blank lines and keepalives."""
    line = line.strip()
    if not line:
        return None
    event = json.loads(line)
    if not isinstance(event, dict) or event.get("type") == "keepalive":
        return None
    return event


def drop_none(**fields: Any) -> dict[str, Any]:
    """A request body or query from keyword arguments, leaving out the ones not given."""
    return {name: value for name, value in fields.items() if value is not None}
