"""The ``local`` runner: each job attempt is a child process ``python -m training run-job ID``
in its own process group, its output in ``DATA_DIR/jobs/ID.ATTEMPT.log``.

Cancel sends SIGTERM to the group (run-job ends the job cancelled, registering nothing) and
SIGKILL once ``job_cancel_grace_seconds`` have passed; a killed run-job leaves the job to the
worker, which gives the attempt up.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from core.settings import Settings, child_environment
from training.jobs.runner import Launch, RunPhase, RunStatus

log = logging.getLogger(__name__)


class LocalRunner:
    def __init__(self, settings: Settings, python: str = sys.executable):
        self.python = python
        self.grace = settings.job_cancel_grace_seconds
        self.log_dir = settings.data_dir / "jobs"
        self._procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self._kill_at: dict[tuple[str, int], float] = {}
        # The children see these settings even when they were given in code (tests, embedding).
        self._env = child_environment(settings, self.log_dir, dict(os.environ))

    def log_path(self, launch: Launch) -> Path:
        return self.log_dir / f"{launch.job_id}.{launch.attempt}.log"

    def launch(self, launch: Launch) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(launch), "ab") as out:
            self._procs[launch.job_id, launch.attempt] = subprocess.Popen(
                [self.python, "-m", "training", "run-job", launch.job_id],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel reaches its children
                env=self._env,
            )
        log.info("launched job %s attempt %d", launch.job_id, launch.attempt)

    def status(self, launch: Launch) -> RunStatus:
        key = launch.job_id, launch.attempt
        proc = self._procs.get(key)
        if proc is None:
            return RunStatus(RunPhase.GONE, "not started by this worker")
        code = proc.poll()
        if code is None:
            if key in self._kill_at and time.monotonic() >= self._kill_at.pop(key):
                self._signal(proc, signal.SIGKILL)
            return RunStatus(RunPhase.RUNNING)
        self._kill_at.pop(key, None)
        if code == 0:
            return RunStatus(RunPhase.SUCCEEDED)
        if code < 0:
            return RunStatus(RunPhase.FAILED, f"killed by {signal.Signals(-code).name}")
        return RunStatus(RunPhase.FAILED, f"exit code {code}")

    def cancel(self, launch: Launch) -> None:
        key = launch.job_id, launch.attempt
        proc = self._procs.get(key)
        if proc is None or proc.poll() is not None or key in self._kill_at:
            return
        self._signal(proc, signal.SIGTERM)
        self._kill_at[key] = time.monotonic() + self.grace

    def logs(self, launch: Launch, tail: int = 100) -> list[str]:
        try:
            with open(self.log_path(launch), errors="replace") as f:
                return [line.rstrip("\n") for line in deque(f, maxlen=tail)]
        except FileNotFoundError:
            return []

    def forget(self, launch: Launch) -> None:
        self._procs.pop((launch.job_id, launch.attempt), None)

    def shutdown(self) -> None:
        """Stop every child: SIGTERM, then SIGKILL after the grace period."""
        running = [p for p in self._procs.values() if p.poll() is None]
        for proc in running:
            self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait()

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
