"""A request id for every HTTP request: in the ``X-Request-ID`` response header and on every
log line written while the request runs (service/logs.py reads it from a context variable).

A caller's own ``X-Request-ID`` is kept when it is 1-128 letters, digits or ``. _ : -`` (a
UUID, a trace id, a ULID fit), so one id follows a call through a proxy or a client's retries;
anything else, which could forge or break log lines, is replaced by a new id.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
MAX_LENGTH = 128
_SAFE = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_LENGTH}}}")

current_request_id: ContextVar[str | None] = ContextVar("loraloop_request_id", default=None)


def accepted_request_id(given: str | None) -> str:
    """``given`` if it is a safe id, else a new one (32 hex digits)."""
    if given is not None and _SAFE.fullmatch(given):
        return given
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Sets the request id for the request's code and logs, and answers it in ``X-Request-ID``.
    Installed outermost, so that every response carries it, refusals and errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        token = current_request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
        # Reset only on success: an exception goes on to Starlette's outermost error handler
        # and to uvicorn, whose 500 and log lines belong to this request too (a request runs
        # in a task of its own, so the id goes no further).
        current_request_id.reset(token)
