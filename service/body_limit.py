"""Request body limits: a body over its route's limit is refused with a 413 before it is read.

A declared Content-Length over the limit is answered at once, without receiving a byte of the
body. A chunked body (no Content-Length) is counted as it arrives and refused as soon as it
passes the limit, so the server never holds more than the limit plus one chunk of it. Most
routes take ``max_body_bytes``; the two uploads take their own, larger setting.

FastAPI has ``max_body_size`` too, but fixed when a route is declared and answered outside the
app's error handlers; here the limits come from the ``Settings`` of each app and the 413 has the
API's error shape, naming the setting to raise.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import Settings
from service.errors import error_response


@dataclass(frozen=True)
class BodyLimit:
    setting: str  # the Settings field holding the limit in bytes
    param: str | None  # the field the 413 names
    advice: str


DEFAULT_LIMIT = BodyLimit("max_body_bytes", None, "send less in one request")
# Routes whose body may exceed max_body_bytes: the uploads, by (method, path template).
UPLOAD_LIMITS = {
    ("POST", "/v1/adapters/{name}/versions"): BodyLimit(
        "max_upload_bytes", "files", "an adapter of that size cannot be published here"
    ),
    ("POST", "/v1/feedback/import"): BodyLimit(
        "max_import_bytes", "file", "split it into several imports, or gzip it"
    ),
}


class BodyTooLarge(HTTPException):
    """413 in the API's error shape (service.errors reads ``param`` and ``code``)."""

    code = "too_large"

    def __init__(self, limit: BodyLimit, max_bytes: int):
        what = f"{limit.param}: the upload" if limit.param else "the request body"
        super().__init__(
            413, f"{what} is over {limit.setting} ({max_bytes} bytes); {limit.advice}"
        )
        self.param = limit.param

    def response(self) -> JSONResponse:
        return error_response(413, self.detail, "invalid_request_error", self.param, self.code)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, uploads: list[tuple[RouteContext, BodyLimit]]):
        self.app = app
        self.settings = settings
        self.uploads = uploads

    def _limit(self, scope: Scope) -> BodyLimit:
        for route, limit in self.uploads:
            if route.matches(scope)[0] == Match.FULL:
                return limit
        return DEFAULT_LIMIT

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        max_bytes: int = getattr(self.settings, limit.setting)
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            await BodyTooLarge(limit, max_bytes).response()(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # Raised inside the route while it reads the body; FastAPI passes an
                    # HTTPException through to the app's handler, which answers in our shape.
                    raise BodyTooLarge(limit, max_bytes)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as error:  # read outside a route's handlers (none today)
            if started:
                raise
            await error.response()(scope, receive, send)


def install_body_limits(app: FastAPI, settings: Settings) -> None:
    """Cap every request body; call once every route is included."""
    routes = {
        (method, route.path): route
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute) for method in route.methods or ()
    }
    missing = [key for key in UPLOAD_LIMITS if key not in routes]
    assert not missing, f"upload routes not found: {missing}"
    uploads = [(routes[key], limit) for key, limit in UPLOAD_LIMITS.items()]
    app.add_middleware(BodyLimitMiddleware, settings=settings, uploads=uploads)
