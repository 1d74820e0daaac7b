"""The long-lived service objects, built once at start-up and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from core.base.info import BaseModelInfo
from core.registry import Registry
from core.settings import Settings
from core.store import Store
from service.auth import Authenticator
from service.engine import Engine
from service.metrics import ServiceMetrics

if TYPE_CHECKING:
    from service.adapters.service import AdapterService
    from service.completion_log import CompletionLogWriter
    from service.feedback.service import FeedbackService
    from service.jobs.service import JobService
    from service.labeling.service import LabelingService
    from service.openai.service import OpenAIService
    from service.ui.service import DashboardService
    from service.ui.sessions import Sessions
    from service.worker_process import WorkerSupervisor


@dataclass
class ServiceState:
    settings: Settings
    base_info: BaseModelInfo
    registry: Registry
    engine: Engine
    metrics: ServiceMetrics
    authenticator: Authenticator
    openai: OpenAIService
    adapters: AdapterService
    store: Store
    completion_log: CompletionLogWriter | None
    feedback: FeedbackService
    jobs: JobService
    sessions: Sessions
    labeling: LabelingService
    dashboard: DashboardService
    worker: WorkerSupervisor | None = None

    def begin_shutdown(self) -> None:
        """Start handing the job worker's jobs back now, while requests drain; ``close``
        waits for it."""
        if self.worker is not None:
            self.worker.stop_soon()

    def close(self) -> None:
        """Stop in reverse dependency order: the job worker, no new generations, flush the log,
        close the store."""
        if self.worker is not None:
            self.worker.stop()
        self.adapters.close()
        self.engine.close()
        if self.completion_log is not None:
            self.completion_log.close()
        self.store.close()


def get_state(request: Request) -> ServiceState:
    return request.app.state.services
