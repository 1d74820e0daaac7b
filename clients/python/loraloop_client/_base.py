"""The HTTP core shared by :class:`Client` and :class:`AsyncClient`: configuration from
arguments or the environment, and one request loop each (sync, async) that retries with
exponential backoff and jitter, honouring ``Retry-After``, the way openai-python does.

What is retried: connection errors, 408, 429 and 5xx (a server's ``x-should-retry`` header
wins). A call that is not safe to repeat (publishing an adapter, creating a snapshot) is only
retried when the connection could not be opened, so the server never saw it. Feedback posts,
imports and job submissions carry an ``Idempotency-Key`` generated once per call and reused by
every attempt, so the server counts a retried one once.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx2

from loraloop_client._exceptions import (
    APIConnectionError,
    APITimeoutError,
    make_status_error,
)
from loraloop_client._version import __version__

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx2.Timeout(60.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
MAX_RETRY_AFTER_SECONDS = 120.0  # a longer Retry-After is an outage: give up, as openai does
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0


def resolve_base_url(base_url: str | None) -> str:
    """The argument, else ``LORALOOP_BASE_URL``, else the local default; without a trailing
    ``/v1`` (the API paths carry it)."""
    url = (base_url or os.environ.get("LORALOOP_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    return url.removesuffix("/v1")


def resolve_api_key(api_key: str | None) -> str | None:
    """The argument, else ``LORALOOP_API_KEY``; None for a server open on loopback."""
    return api_key if api_key is not None else os.environ.get("LORALOOP_API_KEY") or None


def as_timeout(timeout: float | httpx2.Timeout | None) -> httpx2.Timeout | None:
    """Seconds (connect capped at 5 s, so a dead host fails fast) or an httpx2.Timeout."""
    if timeout is None or isinstance(timeout, httpx2.Timeout):
        return timeout
    return httpx2.Timeout(timeout, connect=min(timeout, DEFAULT_TIMEOUT.connect or 5.0))


def new_idempotency_key() -> str:
    return f"loraloop-{uuid.uuid4()}"


def should_retry(response: httpx2.Response) -> bool:
    """Whether an error status is worth another attempt."""
    hint = response.headers.get("x-should-retry")
    if hint in ("true", "false"):
        return hint == "true"
    return response.status_code in (408, 429) or response.status_code >= 500


def retry_after(response: httpx2.Response | None) -> float | None:
    """The server's requested delay in seconds (``retry-after-ms``, ``retry-after`` as seconds
    or an HTTP date), or None."""
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return when.timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def retry_delay(retries_taken: int, response: httpx2.Response | None) -> float:
    """Seconds before the next attempt: the server's Retry-After when sane, else
    ``min(0.5 * 2**n, 8)`` minus up to 25% jitter (so clients that failed together spread)."""
    after = retry_after(response)
    if after is not None and 0 < after <= MAX_RETRY_AFTER_SECONDS:
        return after
    delay = min(INITIAL_RETRY_DELAY * 2**retries_taken, MAX_RETRY_DELAY)
    return delay * (1 - 0.25 * random.random())


def _retryable_error(error: httpx2.TransportError, safe: bool) -> bool:
    # A refused or timed-out connect never reached the server: always safe to try again.
    return safe or isinstance(error, (httpx2.ConnectError, httpx2.ConnectTimeout))


def _connection_error(error: httpx2.TransportError, request: httpx2.Request) -> APIConnectionError:
    if isinstance(error, httpx2.TimeoutException):
        return APITimeoutError(request)
    return APIConnectionError(f"connection error: {error}", request)


def _rewind(files: Any) -> None:
    """Seek uploaded file objects back to their start, so a retry sends them whole."""
    for _, value in files or ():
        handle = value[1] if isinstance(value, tuple) else value
        if hasattr(handle, "seek"):
            handle.seek(0)


class BaseClient:
    """Configuration shared by the sync and async clients."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float | httpx2.Timeout | None,
        max_retries: int,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.base_url = resolve_base_url(base_url)
        self.api_key = resolve_api_key(api_key)
        self.timeout = as_timeout(timeout)
        self.max_retries = max_retries

    def _copy_with(self, timeout: float | httpx2.Timeout | None, max_retries: int | None) -> Any:
        clone = copy.copy(self)
        if timeout is not None:
            clone.timeout = as_timeout(timeout)
        if max_retries is not None:
            clone.max_retries = max_retries
        return clone

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"loraloop-client/{__version__}", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _build(
        self, http: httpx2.Client | httpx2.AsyncClient, method: str, path: str, *,
        params: dict[str, Any] | None, json: Any, files: Any, data: Any, headers: dict[str, str] | None,
    ) -> httpx2.Request:
        _rewind(files)
        params = {k: v for k, v in (params or {}).items() if v is not None}
        return http.build_request(
            method, self.base_url + path, params=params, json=json, files=files, data=data,
            headers={**self._headers(), **(headers or {})}, timeout=self.timeout,
        )

    def openai_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Arguments for an ``openai.OpenAI`` pointed at this server."""
        kwargs: dict[str, Any] = {
            "base_url": f"{self.base_url}/v1",
            # openai insists on a key; an open (loopback) server ignores it.
            "api_key": self.api_key or "unused",
            "max_retries": self.max_retries,
        }
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout.read or self.timeout.connect
        return {**kwargs, **overrides}


class SyncCore(BaseClient):
    """The blocking request loop."""

    def __init__(self, base_url, api_key, timeout, max_retries, http_client: httpx2.Client | None) -> None:
        super().__init__(base_url, api_key, timeout, max_retries)
        self._http = http_client or httpx2.Client()

    def close(self) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
        files: Any = None, data: Any = None, headers: dict[str, str] | None = None,
        safe: bool = True, stream: bool = False,
    ) -> httpx2.Response:
        """Send with retries; the successful response (open when ``stream``), else raise."""
        for retries_taken in range(self.max_retries + 1):
            last = retries_taken == self.max_retries
            request = self._build(self._http, method, path, params=params, json=json, files=files,
                                  data=data, headers=headers)
            try:
                response = self._http.send(request, stream=stream)
            except httpx2.TransportError as error:
                if last or not _retryable_error(error, safe):
                    raise _connection_error(error, request) from error
                time.sleep(retry_delay(retries_taken, None))
                continue
            if response.is_success:
                return response
            response.read()
            response.close()
            if last or not safe or not should_retry(response):
                raise make_status_error(response)
            time.sleep(retry_delay(retries_taken, response))
        raise AssertionError("unreachable")

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx2.Response]:
        """The open response of a streamed call, closed when the block ends."""
        response = self.request(method, path, stream=True, **kwargs)
        try:
            yield response
        except httpx2.TransportError as error:
            raise _connection_error(error, response.request) from error
        finally:
            response.close()


class AsyncCore(BaseClient):
    """The asyncio request loop (a mirror of :class:`SyncCore`)."""

    def __init__(self, base_url, api_key, timeout, max_retries, http_client: httpx2.AsyncClient | None) -> None:
        super().__init__(base_url, api_key, timeout, max_retries)
        self._http = http_client or httpx2.AsyncClient()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
        files: Any = None, data: Any = None, headers: dict[str, str] | None = None,
        safe: bool = True, stream: bool = False,
    ) -> httpx2.Response:
        for retries_taken in range(self.max_retries + 1):
            last = retries_taken == self.max_retries
            request = self._build(self._http, method, path, params=params, json=json, files=files,
                                  data=data, headers=headers)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx2.TransportError as error:
                if last or not _retryable_error(error, safe):
                    raise _connection_error(error, request) from error
                await asyncio.sleep(retry_delay(retries_taken, None))
                continue
            if response.is_success:
                return response
            await response.aread()
            await response.aclose()
            if last or not safe or not should_retry(response):
                raise make_status_error(response)
            await asyncio.sleep(retry_delay(retries_taken, response))
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx2.Response]:
        response = await self.request(method, path, stream=True, **kwargs)
        try:
            yield response
        except httpx2.TransportError as error:
            raise _connection_error(error, response.request) from error
        finally:
            await response.aclose()
