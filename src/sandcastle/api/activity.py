"""Records sandbox activity for the agent API's ``last_activity``.

Every request under ``/v1/sandboxes/{id}/…`` (files, executions, contexts, the agent API; not
the sandbox record itself, and not the agent API's ping) that succeeds (status below 400, so
the caller was authenticated and the sandbox is theirs) touches the sandbox when its response
starts and again when it ends, so a long download or execution counts until it is over.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandcastle.domain import ids
from sandcastle.services.activity import ActivityTracker

_SANDBOX_PATH = re.compile(rf"^/v1/sandboxes/({ids.SANDBOX_ID_PATTERN})/(.+)$")
_PING = re.compile(r"^agent/?$")


class ActivityMiddleware:
    def __init__(self, app: ASGIApp, *, tracker: ActivityTracker) -> None:
        self.app = app
        self.tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _SANDBOX_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None or (scope["method"] == "GET" and _PING.match(match.group(2))):
            await self.app(scope, receive, send)
            return
        sandbox_id = match.group(1)
        succeeded = False

        async def send_and_touch(message: Message) -> None:
            nonlocal succeeded
            if message["type"] == "http.response.start":
                succeeded = message["status"] < 400
                if succeeded:
                    self.tracker.touch(sandbox_id)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                if succeeded:
                    self.tracker.touch(sandbox_id)
            await send(message)

        await self.app(scope, receive, send_and_touch)
