"""A real HTTP server in a thread whose answers a test scripts: a status with headers and a
JSON body, a server-sent event stream (possibly silent for a while), or a dropped connection
(the request is read, then the socket is closed without an answer). It records every request
it receives, with its arrival time."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Events:
    """A 200 text/event-stream answer: the headers at once, ``text`` after ``delay`` seconds."""
    text: str
    delay: float = 0.0


DROP = "drop"


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


Handler = Callable[[Received], "Reply | Events | str"]


class FaultServer:
    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.received: list[Received] = []

    def requests_to(self, method: str, path: str) -> list[Received]:
        return [r for r in self.received if r.method == method and r.path.split("?")[0] == path]


def scripted(replies: dict[tuple[str, str], list[Reply | Events | str]]) -> Handler:
    """Answer each (method, path) with its replies in order; the last one repeats."""
    def handle(request: Received) -> Reply | Events | str:
        queue = replies.get((request.method, request.path.split("?")[0]))
        if not queue:
            return Reply(404, {"error": {"message": "not scripted", "type": "not_found_error"}})
        return queue.pop(0) if len(queue) > 1 else queue[0]
    return handle


@contextmanager
def fault_server(handle: Handler) -> Iterator[tuple[str, FaultServer]]:
    state = FaultServer(handle)

    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Received(self.command, self.path, dict(self.headers), body, time.monotonic())
            state.received.append(request)
            reply = state.handle(request)
            if reply == DROP:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if isinstance(reply, Events):
                self._events(reply)
                return
            assert isinstance(reply, Reply)
            payload = b"" if reply.body is None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _events(self, reply: Events) -> None:
            payload = reply.text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.flush()
            time.sleep(reply.delay)
            try:
                self.wfile.write(payload)
            except OSError:  # the client gave up waiting
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: object) -> None:  # keep pytest's output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
