"""Generation requests count as on their way to the engine from the moment their headers are
read, not only once their handler runs.

An idle engine waits for a burst of requests to land before its first prefill
(``Engine.arriving``, service/engine/scheduler.py), so that the burst starts as one batch. A
request reaches ``OpenAIService.start_chat`` 5-8 ms after the server has read its headers
(body read and validated, API key checked), and 32 requests from one client land about 3 ms
apart: counted only from ``start_chat``, a burst showed a pause of over 5 ms now and then, the
engine started on the first few, and the rest joined over six more passes (36-38 passes
instead of 32, about 20% more time; docs/performance.md, "Over HTTP").

A request whose body is slow to come (or never comes) holds an idle engine no longer than the
burst wait's bound (``BURST_MAX_WAIT``, 250 ms) each time requests are waiting.
"""

from __future__ import annotations

from contextlib import ExitStack

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
STATE_KEY = "arrival"  # in the request's state: the ExitStack holding its count


class ArrivalMiddleware:
    """Counts a POST to a generation path as on its way (``Engine.arriving``) until its handler
    has queued it or given up (``arrived``), or the request ends, whichever comes first."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = None  # looked up only for a generation request: every request passes here
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in GENERATION_PATHS:
            # the app is set by Starlette before its middleware; its services by the lifespan
            services = getattr(scope["app"].state, "services", None)
        if services is None:
            await self.app(scope, receive, send)
            return
        with ExitStack() as arrival:
            arrival.enter_context(services.engine.arriving())
            scope.setdefault("state", {})[STATE_KEY] = arrival
            await self.app(scope, receive, send)


def arrived(request: Request) -> None:
    """The request is queued, or will never be: it no longer counts as on its way."""
    arrival = request.scope.get("state", {}).get(STATE_KEY)
    if arrival is not None:
        arrival.close()  # a second close does nothing
