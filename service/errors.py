"""One error shape everywhere, OpenAI's: ``{"error": {"message", "type", "param", "code"}}``.

Domain exceptions from core and the engine map to HTTP status codes here and nowhere else.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (
    Conflict,
    IntegrityError,
    InvalidAdapter,
    InvalidRequest,
    LoraloopError,
    NotFound,
    Overloaded,
    RegistryUnavailable,
    StoreUnavailable,
    TimedOut,
    TooLarge,
    Unavailable,
)
from service.request_ids import REQUEST_ID_HEADER, current_request_id

log = logging.getLogger(__name__)

# (status, OpenAI error type, code) per domain error; the first match in order wins.
_MAPPING: list[tuple[type[LoraloopError], int, str, str]] = [
    (InvalidRequest, 400, "invalid_request_error", "invalid_value"),
    (NotFound, 404, "not_found_error", "not_found"),
    (Conflict, 409, "conflict_error", "conflict"),
    (TooLarge, 413, "invalid_request_error", "too_large"),
    (InvalidAdapter, 422, "invalid_request_error", "invalid_adapter"),
    (Overloaded, 429, "rate_limit_error", "overloaded"),
    (IntegrityError, 502, "api_error", "integrity_error"),
    (RegistryUnavailable, 503, "api_error", "registry_unavailable"),
    (StoreUnavailable, 503, "api_error", "store_unavailable"),
    (Unavailable, 503, "api_error", "unavailable"),
    (TimedOut, 504, "timeout_error", "timeout"),
]
RETRY_AFTER_SECONDS = "1"


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status in (429, 503) else None
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


def domain_error_response(error: LoraloopError) -> JSONResponse:
    for cls, status, type_, code in _MAPPING:
        if isinstance(error, cls):
            if status >= 500:
                log.warning("%s: %s", type(error).__name__, error)
            return error_response(status, str(error), type_, getattr(error, "param", None), code)
    log.exception("unmapped domain error", exc_info=error)
    return internal_error_response()


def internal_error_response() -> JSONResponse:
    """A failure that is ours, not the caller's: no details leak."""
    return error_response(500, "internal error", "api_error", code="internal_error")


def _validation_response(error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    message = first.get("msg", "invalid request")
    if param:
        message = f"{param}: {message}"
    return error_response(400, message, "invalid_request_error", param, "invalid_value")


_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                 413: "invalid_request_error", 429: "rate_limit_error"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoraloopError)
    async def _domain(_: Request, error: LoraloopError) -> JSONResponse:
        return domain_error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        type_ = _STATUS_TYPES.get(error.status_code, "api_error")
        # Our own HTTPExceptions (body and rate limits) may name a param and a code.
        response = error_response(
            error.status_code, str(error.detail), type_,
            getattr(error, "param", None), getattr(error, "code", None),
        )
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=error)
        response = internal_error_response()
        request_id = current_request_id.get()
        if request_id is not None:  # Starlette answers this one outside every middleware
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
