"""``python -m service``'s uvicorn server, with a shutdown that rolling updates can rely on.

On SIGTERM (or Ctrl-C), uvicorn alone would close its listeners at once (new connections
refused, readiness unreachable) and cut everything after its timeout. Instead:

1. at once, ``/readyz`` turns 503 and new requests get 503 with Retry-After
   (service/draining.py), and the local job worker is told to stop: its running job goes back
   to the queue, or fails when it has no attempts left (the store's rules);
2. requests in flight run on for up to ``shutdown_timeout_seconds``;
3. generations still running then are cut: a stream ends with an error event (503,
   ``unavailable``) and ``[DONE]``, a plain request gets 503 with Retry-After;
4. uvicorn closes the listeners and the idle connections, and the lifespan waits for the
   worker's hand-off, flushes the completion log and closes the store; the process exits 0.

A second signal ends the wait for requests in flight; a third exits without the lifespan.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE

from core.settings import Settings

log = logging.getLogger(__name__)

# After the cut: time for the error events and 503s to reach their clients, and uvicorn's own
# graceful timeout for whatever still runs (an adapter upload, say) before it is cancelled.
CUT_SECONDS = 5
# What the shutdown may take beyond shutdown_timeout_seconds: the cut (CUT_SECONDS), uvicorn's
# timeout (CUT_SECONDS), then the lifespan's log flush and store close; the job worker's
# hand-off runs meanwhile from the signal on. The Helm chart's grace period leaves this much.
EXIT_MARGIN_SECONDS = 15
CUT_REASON = "the server is shutting down and this generation outlasted shutdown_timeout_seconds"


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, timeout: float):
        super().__init__(config)
        self.app = app
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's: it re-raises the signal once shut down, so that the process would die
        # by SIGTERM instead of exiting 0 after a clean shutdown.
        drain = self.app.state.drain
        if self.should_exit:
            self.force_exit = True
        elif not self.started or self._loop is None or drain.draining:
            self.should_exit = True  # starting up (nothing to drain), or asked twice
        else:
            drain.start()  # /readyz is 503 from the next request on
            # A signal handler runs inside whatever was running, a request's task maybe: the
            # shutdown starts in a context of its own, with no request id.
            self._loop.call_soon_threadsafe(self._start_draining, context=contextvars.Context())

    def _start_draining(self) -> None:
        self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        services, drain = self.app.state.services, self.app.state.drain
        try:
            log.info(
                "shutting down: waiting up to %g s for %d requests in flight",
                self.timeout, drain.in_flight,
            )
            services.begin_shutdown()  # the job worker hands its jobs back meanwhile
            if not await drain.wait_idle(self.timeout):
                log.warning(
                    "shutting down: %d requests still in flight after %g s; cutting them",
                    drain.in_flight, self.timeout,
                )
                await asyncio.to_thread(services.engine.close, CUT_REASON)
                await drain.wait_idle(CUT_SECONDS)
        finally:
            self.should_exit = True  # uvicorn's shutdown, then the lifespan's


def serve(app: FastAPI, settings: Settings, log_level: str) -> None:
    """Serve ``app`` on the settings' address until a signal stops it (see the module doc)."""
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level,
        log_config=None,  # service/logs.py formats every line, uvicorn's included
        timeout_graceful_shutdown=CUT_SECONDS,
    )
    server = GracefulServer(config, app, settings.shutdown_timeout_seconds)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
