# Generated from ../_async/_transport.py by sdk/python/tools/generate_sync.py: do not edit.
"""One HTTP connection pool to the server, with the SDK's retries and error translation.

Every call of the SDK goes through :meth:`AsyncTransport.send`: an error answer becomes the
exception of :mod:`sandcastle_sdk.errors` here and nowhere else, and a 429 or a dropped
connection is retried here (``_http.should_retry`` says when) with backoff.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from sandcastle_sdk import errors
from sandcastle_sdk._http import Settings, backoff, error_for, ndjson_event, should_retry

from . import _io

M = TypeVar("M", bound=BaseModel)


class SyncTransport:
    def __init__(self, settings: Settings, http: httpx.Client | None = None) -> None:
        self.settings = settings
        # The key goes on each request rather than on the client, so a client passed in (with
        # its own transport, proxies or certificates) carries it too.
        self._headers = settings.headers()
        self._http = http or httpx.Client(base_url=settings.url, timeout=settings.httpx_timeout())

    def close(self) -> None:
        self._http.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: Any = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """The answer to one request, retried as allowed; raises for an error answer.

        A body given as an iterator, or a form with files (read as it is sent), can be sent
        once only, so such a request is never repeated once a connection was made.
        """
        replayable = files is None and (content is None or isinstance(content, bytes | str))
        attempt = 0
        while True:
            attempt += 1
            request = self._http.build_request(
                method,
                path,
                params=params,
                json=json,
                content=content,
                data=data,
                files=files,
                headers={**self._headers, **(headers or {})},
            )
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                connect_only = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if (
                    attempt > self.settings.max_retries
                    or not (replayable or connect_only)
                    or not should_retry(method, status=None, error=exc)
                ):
                    raise errors.TransportError(f"{method} {path}: {exc!r}") from exc
                _io.sleep(backoff(attempt))
                continue
            if response.status_code < 400:
                return response
            response.read()
            response.close()
            failure = error_for(response)
            if (
                attempt > self.settings.max_retries
                or not replayable
                or not should_retry(method, status=response.status_code, error=None)
            ):
                raise failure
            _io.sleep(backoff(attempt, failure.retry_after))

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.send(method, path, **kwargs)
        return None if response.status_code == 204 else response.json()

    def model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self.json(method, path, **kwargs))

    def items(self, model: type[M], method: str, path: str, **kwargs: Any) -> list[M]:
        """The ``items`` of a list answer, as models."""
        body = self.json(method, path, **kwargs)
        return [model.model_validate(item) for item in body["items"]]

    def pages(self, model: type[M], path: str, params: Mapping[str, Any]) -> Iterator[M]:
        """Every item of a cursor-paged list, fetching the next page as the last is used up."""
        query = dict(params)
        while True:
            body = self.json("GET", path, params=query)
            for item in body["items"]:
                yield model.model_validate(item)
            cursor = body.get("next_cursor")
            if not cursor:
                return
            query["cursor"] = cursor

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed answer, closed on leaving the block."""
        response = self.send(method, path, stream=True, **kwargs)
        try:
            yield response
        finally:
            response.close()

    @contextmanager
    def events(self, method: str, path: str, **kwargs: Any) -> Iterator[Iterator[dict[str, Any]]]:
        """The events of an NDJSON stream (keepalives left out), for the block's length."""
        with self.stream(method, path, **kwargs) as response:
            yield _ndjson(response, f"{method} {path}")


def _ndjson(response: httpx.Response, what: str) -> Iterator[dict[str, Any]]:
    try:
        for line in response.iter_lines():
            event = ndjson_event(line)
            if event is not None:
                yield event
    except httpx.TransportError as exc:
        raise errors.StreamEndedError(f"{what}: {exc!r}") from exc
