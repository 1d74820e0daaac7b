"""A background refresh: call a function every N seconds on a daemon thread until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Poller:
    """Calls ``refresh`` every ``seconds`` (0: never) from ``start`` until ``stop``. A failing
    call is logged with ``failure`` and the next one comes at the usual time: a registry or
    database blip must not end the polling."""

    def __init__(self, name: str, refresh: Callable[[], object], failure: str):
        self._name = name
        self._refresh = refresh
        self._failure = failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self._thread = threading.Thread(target=self._run, args=(seconds,), name=self._name, daemon=True)
        self._thread.start()

    def _run(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self._refresh()
            except Exception:
                log.exception("%s", self._failure)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
