"""The runner interface: how a worker starts, watches and stops one attempt at a job.

A runner only launches ``python -m training run-job ID`` somewhere (a child process, a
Kubernetes Job, a JobSet) and reports on that process. The job's own state (claimed, progress,
succeeded, failed, cancelled) lives in the store, which ``run-job`` writes itself; a runner's
``RunStatus`` says only what became of the process, e.g. that it vanished or was OOM-killed
before it could write anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class RunPhase(StrEnum):
    PENDING = "pending"  # created, not running yet (pod scheduling, image pull)
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # the process exited 0 (the job's own state is in the store)
    FAILED = "failed"  # exited non-zero, deadline exceeded, backoff limit reached ...
    GONE = "gone"  # no such run (deleted, TTL-collected, never created)

    @property
    def finished(self) -> bool:
        return self in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.GONE)


@dataclass(frozen=True)
class Launch:
    """One attempt at running a job: what a runner starts."""

    job_id: str  # "job-<hex>"
    attempt: int  # 1 for the first run, 2 after a retry ... (names derive from job_id and attempt)
    kind: str  # reward | ppo | dpo | round
    use_case: str


@dataclass(frozen=True)
class RunStatus:
    phase: RunPhase
    reason: str | None = None  # a short human reason on FAILED/GONE (e.g. "DeadlineExceeded")


class Runner(Protocol):
    def launch(self, launch: Launch) -> None:
        """Start the run; idempotent: launching the same (job_id, attempt) twice starts one."""
        ...

    def status(self, launch: Launch) -> RunStatus: ...

    def cancel(self, launch: Launch) -> None:
        """Stop the run (idempotent; a run that is already gone is fine)."""
        ...

    def logs(self, launch: Launch, tail: int = 100) -> list[str]:
        """The run's last ``tail`` log lines, best effort (for a failed run's error)."""
        ...
