"""The long-lived service objects, built once at start-up and shared by every request.

Features' routers do not import this module: each reads its own service object off
``app.state.services`` with a dependency of its own (``get_adapters`` and so on), so no
feature depends, through this list, on every other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.base.info import BaseModelInfo
from core.registry import Registry
from core.registry.catalog import Catalog
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
    from service.models.service import ModelsService
    from service.openai.service import OpenAIService
    from service.rewards.service import RewardService
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
    catalog: Catalog
    openai: OpenAIService
    models: ModelsService
    adapters: AdapterService
    rewards: RewardService
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
        """Stop in reverse dependency order: the job worker, the catalog's poll, no new
        generations, flush the log, close the store."""
        if self.worker is not None:
            self.worker.stop()
        self.catalog.stop()
        self.engine.close()
        if self.completion_log is not None:
            self.completion_log.close()
        self.store.close()
