"""Draining: once the server is told to stop, it takes no new work but finishes what it has.

While draining, ``/readyz`` answers 503 (load balancers stop sending) and every new request but
the probes gets 503 with ``Retry-After`` and ``Connection: close``: OpenAI-style clients retry
it, on another replica behind a Service. Requests admitted before keep running; ``Drain``
counts them so that the shutdown (service/server.py) can wait for the last one.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_response

# Probes keep answering (liveness stays true, readiness says "draining"); they are not work.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
POLL_SECONDS = 0.05
REFUSAL = "the server is shutting down; retry the request (another replica may serve it)"


class Drain:
    """Whether the server is draining, and how many admitted requests are still running.
    Used from the event loop only."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0

    def start(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no admitted request runs; False if ``timeout`` seconds passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_flight:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True


class DrainMiddleware:
    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            response = error_response(503, REFUSAL, "api_error", code="unavailable")
            response.headers["Connection"] = "close"  # and do not come back on this connection
            await response(scope, receive, send)
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)  # a stream counts until its last byte is sent
        finally:
            self.drain.in_flight -= 1
