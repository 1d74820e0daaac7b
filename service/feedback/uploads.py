"""A route whose request body is capped while it arrives: an upload over the limit is refused
with a 413 naming the setting before it is spooled to disk, however it is sent (with a
Content-Length or chunked)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message

from core.errors import TooLarge
from service.state import get_state


def _too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"file: the upload is over max_import_bytes ({limit} bytes); split it into several "
        "imports, or gzip it",
        param="file",
    )


class ImportUploadRoute(APIRoute):
    """Counts the body against the service's ``max_import_bytes`` as FastAPI reads the form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def limited(request: Request) -> Response:
            limit = get_state(request).settings.max_import_bytes
            declared = request.headers.get("content-length")
            if declared is not None and declared.isascii() and declared.isdigit():
                if int(declared) > limit:
                    raise _too_large(limit)
            received = 0
            receive = request.receive

            async def counting_receive() -> Message:
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
                return message

            try:
                return await handle(Request(request.scope, counting_receive))
            except HTTPException as exc:
                # FastAPI reports any failure while reading the form as a 400; ours says why.
                if isinstance(exc.__cause__, TooLarge):
                    raise exc.__cause__ from None
                raise

        return limited
