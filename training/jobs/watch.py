"""A running job's heartbeat thread: checks in every few seconds, learns of a cancel or a lost
lease, and forwards the job's log lines to the store. The training loop calls ``check()`` at
every step (through the metrics sink) and stops there when told to."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from core.errors import Conflict
from training.jobs.reporter import JobReporter

log = logging.getLogger(__name__)


class JobStopped(Exception):
    """Raised inside the run to stop it: cancelled, terminated, or the lease was lost."""

    def __init__(self, reason: str, *, cancelled: bool = False, lost: bool = False):
        super().__init__(reason)
        self.cancelled = cancelled
        self.lost = lost


class StoreLogHandler(logging.Handler):
    """Buffers log records; ``Watch`` writes them to the job's log on each heartbeat."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 (a bad format string must not stop training)
            return
        with self._lock:
            self._lines.append(line)

    def take(self) -> list[str]:
        with self._lock:
            lines, self._lines = self._lines, []
        return lines


class Watch:
    def __init__(self, reporter: JobReporter, interval: float, logs: StoreLogHandler):
        self.reporter = reporter
        self.interval = interval
        self.logs = logs
        self.cancelled = threading.Event()
        self.lost: str | None = None
        self.terminated: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()

    def check(self) -> None:
        """Raise JobStopped if the job was cancelled or terminated, or another attempt holds it."""
        if self.lost is not None:
            raise JobStopped(self.lost, lost=True)
        if self.cancelled.is_set():
            raise JobStopped("cancelled", cancelled=True)
        if self.terminated is not None:
            raise JobStopped(self.terminated)

    def stopped_by(self, error: Exception) -> JobStopped | None:
        """The stop behind ``error`` that ended the run: ``error`` itself if it is one, else the
        stop this watch recorded, if any; None: the run failed on its own.

        The SIGTERM handler's JobStopped lands wherever the main thread is, and the library it
        interrupts may hand it on wrapped (SQLAlchemy's StatementError wraps an exception raised
        inside a statement) or as the failure it caused: judged by its type, such a run would
        count as failed instead of giving its attempt back."""
        if isinstance(error, JobStopped):
            return error
        try:
            self.check()
        except JobStopped as stop:
            return stop
        return None

    def terminate(self, signum: int, frame: Any) -> None:
        """The SIGTERM handler: stop the run where it is, and again at its next step.

        The exception lands wherever the main thread happens to be, and some places swallow
        it (a ``__del__`` or a generator's cleanup only print it, and an ``except Exception``
        may catch it); the run would then train on until SIGKILL and lose its chance to give
        the attempt back."""
        self.terminated = f"terminated by signal {signal.Signals(signum).name}"
        raise JobStopped(self.terminated)

    def beat(self) -> None:
        try:
            job = self.reporter.heartbeat()
        except Conflict as e:
            self.lost = str(e)
            return
        except Exception as e:  # noqa: BLE001 (a database blip: the next beat tries again)
            log.warning("heartbeat failed: %s", e)
            return
        if job.cancel_requested:
            self.cancelled.set()
        self.flush()

    def flush(self) -> None:
        lines = self.logs.take()
        if not lines or self.lost is not None:
            return
        try:
            self.reporter.logs(lines)
        except Exception as e:  # noqa: BLE001 (logs are best effort)
            log.warning("could not store %d log lines: %s", len(lines), e)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()
