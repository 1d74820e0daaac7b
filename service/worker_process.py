"""The local job worker, started and supervised by the server: ``python -m training worker``
as a child process (the service never imports training; it only starts the process).

The worker sees the server's settings through a private config file (LORALOOP_CONFIG), so
settings given in code (tests, embedding) reach it too. If it dies it is started again after
a back-off (1 s doubling to 60 s, reset after a minute of health); on shutdown it gets SIGTERM
(it stops its jobs: they go back to the queue while attempts remain), then SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from core.settings import Settings, child_environment

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 60.0
HEALTHY_AFTER_SECONDS = 60.0


class WorkerSupervisor:
    def __init__(self, settings: Settings, python: str = sys.executable):
        self.settings = settings
        self.python = python
        self.folder = settings.data_dir / "worker"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._stop = threading.Event()
        self._stopping = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._env = child_environment(self.settings, self.folder, dict(os.environ))
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        with open(self.folder / "worker.log", "ab") as out:
            self.process = subprocess.Popen(
                [self.python, "-m", "training", "worker", "--parent", str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self._env, start_new_session=True,  # Ctrl-C on the server is ours to pass on
            )
        self.starts += 1
        log.info("job worker started (pid %d), log %s", self.process.pid, self.folder / "worker.log")

    def _supervise(self) -> None:
        backoff, started = 1.0, time.monotonic()
        while not self._stop.wait(0.5):
            assert self.process is not None
            code = self.process.poll()
            if code is None:
                if time.monotonic() - started > HEALTHY_AFTER_SECONDS:
                    backoff = 1.0
                continue
            log.warning("job worker exited with %s; restarting in %.0f s", code, backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            self._spawn()
            started = time.monotonic()

    def stop_soon(self) -> None:
        """``stop`` on a thread of its own: the caller goes on (a later ``stop`` waits)."""
        threading.Thread(target=self.stop, name="worker-stop", daemon=True).start()

    def stop(self) -> None:
        """SIGTERM, wait for the worker to stop its jobs, then SIGKILL. A second caller
        waits for the first."""
        with self._stopping:
            self._stop.set()
            self._thread.join(timeout=5)
            proc = self.process
            if proc is None or proc.poll() is not None:
                return
            log.info("stopping the job worker (pid %d); it hands its running jobs back", proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.settings.job_cancel_grace_seconds + 10)
            except subprocess.TimeoutExpired:
                log.warning("job worker did not stop in time; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
