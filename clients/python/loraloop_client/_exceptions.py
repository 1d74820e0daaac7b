"""Typed exceptions, openai-python's tree: one class per status a caller acts on.

The server answers every error in OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``; :func:`make_status_error` turns such a response into the matching class.
"""

from __future__ import annotations

from typing import Any

import httpx2


class LoraloopError(Exception):
    """Base of every exception this package raises."""


class APIError(LoraloopError):
    """The request failed: ``message`` says why."""

    def __init__(self, message: str, request: httpx2.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request


class APIConnectionError(APIError):
    """The server could not be reached, or the connection broke before an answer."""

    def __init__(self, message: str = "connection error", request: httpx2.Request | None = None) -> None:
        super().__init__(message, request)


class APITimeoutError(APIConnectionError):
    """No answer within the client's timeout."""

    def __init__(self, request: httpx2.Request | None = None) -> None:
        super().__init__("request timed out", request)


class APIStatusError(APIError):
    """The server answered with a 4xx or 5xx status.

    ``status_code``, ``message``, and from the error body ``type``, ``param`` (the field at
    fault, for a 400) and ``code``; ``request_id`` from the ``x-request-id`` header if any.
    """

    status_code: int

    def __init__(self, message: str, *, response: httpx2.Response, body: Any) -> None:
        super().__init__(message, response.request)
        self.response = response
        self.status_code = response.status_code
        self.body = body
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        self.type: str | None = error.get("type")
        self.param: str | None = error.get("param")
        self.code: str | None = error.get("code")
        self.request_id: str | None = response.headers.get("x-request-id")

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message}"


class BadRequestError(APIStatusError):
    """400: a malformed body or parameter; ``param`` names it."""


class AuthenticationError(APIStatusError):
    """401: no API key, or an unknown one."""


class PermissionDeniedError(APIStatusError):
    """403: the API key lacks the scope the call needs."""


class NotFoundError(APIStatusError):
    """404: unknown adapter, version, alias, snapshot or job."""


class ConflictError(APIStatusError):
    """409: a compare-and-swap lost, an adapter in use, an idempotency key reused."""


class RequestTooLargeError(APIStatusError):
    """413: over a server limit; the message names the setting."""


class UnprocessableEntityError(APIStatusError):
    """422: an uploaded adapter the server cannot serve."""


class RateLimitError(APIStatusError):
    """429: the server's queue is full (retried automatically, honouring Retry-After)."""


class InternalServerError(APIStatusError):
    """5xx."""


class ServiceUnavailableError(InternalServerError):
    """503: the server, or the registry behind it, is unavailable for now."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def make_status_error(response: httpx2.Response) -> APIStatusError:
    """The exception for an error response (its body must have been read)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text or None
    message = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
    message = message or (body if isinstance(body, str) else None) or response.reason_phrase
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = InternalServerError if response.status_code >= 500 else APIStatusError
    return cls(str(message), response=response, body=body)
