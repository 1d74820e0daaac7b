"""The engine thread: the one thread that runs the model.

It steps the scheduler while there is work and sleeps on ``wakeup`` otherwise; other threads
set ``wakeup`` when they queue work (a request, a cancel, a finished adapter load). Work that
must not race a step (copying an adapter into a LoRA slot for an admin call) is handed over
with ``call`` and runs between two steps. A step that raises fails the requests in flight, not
the thread.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from service.engine.scheduler import Scheduler

log = logging.getLogger(__name__)

# How long a thread holding the GIL may run Python before one waiting for it gets it (CPython's
# default is 5 ms). The engine thread drops the GIL in every torch op, so it never makes
# others wait long; the event loop does (building a response, parsing a request), and while
# the engine thread waits for it, its OpenMP team waits too. At 0.5 ms our server served
# 32 concurrent requests 1-3% faster over HTTP (8 alternating rounds against a server at
# 5 ms; docs/performance.md). Process-wide, like torch's thread count: only ever lowered.
GIL_SWITCH_SECONDS = 0.0005


class EngineThread:
    def __init__(self, scheduler: Scheduler, wakeup: threading.Event):
        self.scheduler = scheduler
        self._wakeup = wakeup  # the scheduler sets it too (an adapter load finished)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="loraloop-engine", daemon=True)

    def start(self) -> None:
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_SECONDS))
        self._thread.start()

    def wake(self) -> None:
        """Step now: work was queued."""
        self._wakeup.set()

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` between two engine steps; its result or exception in the future."""
        future: Future = Future()

        def command() -> None:
            try:
                future.set_result(fn())
            except Exception as e:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(e)

        self.scheduler.commands.put(command)
        self._wakeup.set()
        return future

    @property
    def alive(self) -> bool:
        """Whether the loop runs and has not been asked to stop."""
        return self._thread.is_alive() and not self._stopping

    def stop(self, timeout: float = 30) -> None:
        """End the loop after its current step; waits up to ``timeout`` seconds for it."""
        self._stopping = True
        self._wakeup.set()
        self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            worked = False
            if self.scheduler.has_work():
                try:
                    worked = self.scheduler.step()
                except Exception as e:
                    log.exception("engine step failed; failing the requests in flight")
                    self.scheduler.fail_all(e)
                    worked = True
            if not worked:
                self._wakeup.wait(0.05 if self.scheduler.has_work() else 1.0)
