"""A loraloop server in a thread of the test process: uvicorn on a free loopback port.

    with serve(settings) as url: ...      stopped when the block ends
    with serve_app(app) as url: ...       the same, for an app the test holds
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from core.settings import Settings
from service.app import create_app
from tests.ports import free_port


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Run the app under uvicorn on 127.0.0.1 until the block ends; yields the base URL."""
    with serve_app(create_app(settings)) as url:
        yield url


@contextmanager
def serve_app(app: FastAPI) -> Iterator[str]:
    """``serve`` for an app the test holds (its ``state.services`` are there once started)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
