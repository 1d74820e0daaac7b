"""How a job's process is started, watched and stopped: one interface, a runner per platform."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class RunPhase(StrEnum):
    PENDING = "pending"      # created, not running yet (pod scheduling, image pull)
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # the process exited 0 (the job's own state is in the store)
    FAILED = "failed"        # exited non-zero, deadline exceeded, backoff limit reached ...
    GONE = "gone"            # no such run (deleted, TTL-collected, never created)

@dataclass(frozen=True)
class Launch:
    """One attempt at running a job: what a runner starts."""
    job_id: str
    attempt: int
    kind: str
    use_case: str

@dataclass(frozen=True)
class RunStatus:
    phase: RunPhase
    reason: str | None = None

class Runner(Protocol):
    def launch(self, launch: Launch) -> None: ...
    def status(self, launch: Launch) -> RunStatus: ...
    def cancel(self, launch: Launch) -> None: ...
    def logs(self, launch: Launch, tail: int = 100) -> list[str]: ...
