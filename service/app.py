"""The FastAPI application: service objects built once in the lifespan, thin routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.base.folders import base_model_info
from core.registry import open_registry
from core.registry.catalog import Catalog
from core.settings import Settings
from core.store import Store
from service.adapters.api_router import router as adapters_router
from service.adapters.service import AdapterService
from service.auth import Authenticator
from service.completion_log import CompletionLogWriter
from service.demo import ensure_demo_adapter
from service.draining import Drain, DrainMiddleware
from service.engine import Engine
from service.errors import install_error_handlers
from service.feedback.api_router import router as feedback_router
from service.feedback.service import FeedbackService, import_limits
from service.health import router as health_router
from service.jobs.api_router import router as jobs_router
from service.jobs.service import JobService
from service.labeling.api_router import router as labeling_router
from service.labeling.service import LabelingService
from service.limits import install_limits
from service.metrics import ServiceMetrics
from service.models.api_router import router as models_router
from service.models.service import ModelsService
from service.openai.api_router import router as openai_router
from service.openai.arrivals import ArrivalMiddleware
from service.openai.service import OpenAIService
from service.openapi import install_openapi
from service.request_ids import RequestIdMiddleware
from service.rewards.api_router import router as rewards_router
from service.rewards.service import RewardService
from service.state import ServiceState
from service.ui.api_router import install as install_pages
from service.ui.service import DashboardService
from service.ui.sessions import Sessions
from service.worker_process import WorkerSupervisor

log = logging.getLogger(__name__)


def build_state(settings: Settings) -> ServiceState:
    """Every long-lived object, in dependency order. Each feature's service object gets what
    it needs here; no feature imports another's service module (pyproject's import contracts)."""
    base_info = base_model_info(settings)
    registry = open_registry(settings, base_info)
    ensure_demo_adapter(settings, registry)
    store = Store.from_settings(settings)  # migrates the schema to head
    metrics = ServiceMetrics(base_info.model_id)  # also receives the engine's adapter events
    completion_log = (
        CompletionLogWriter(store, metrics, settings.completion_log_queue)
        if settings.log_completions else None
    )
    engine = Engine(settings, registry, base_info=base_info, events=metrics)
    openai = OpenAIService(
        engine, metrics, completion_sink=completion_log.submit if completion_log else None
    )
    # The registry's adapters in memory, for the adapter and model listings.
    catalog = Catalog(registry)
    catalog.start(settings.alias_poll_seconds)
    adapters = AdapterService(settings, registry, engine, catalog)
    sessions = Sessions(settings)
    labeling = LabelingService(store, registry, openai.sample, completion_log, sessions.seed)
    return ServiceState(
        settings=settings,
        base_info=base_info,
        registry=registry,
        engine=engine,
        metrics=metrics,
        authenticator=Authenticator(
            settings.api_keys, allow_open_access=settings.allow_open_access
        ),
        catalog=catalog,
        openai=openai,
        models=ModelsService(base_info, catalog),
        adapters=adapters,
        rewards=RewardService(engine),
        store=store,
        completion_log=completion_log,
        feedback=FeedbackService(store, completion_log, import_limits(settings)),
        jobs=JobService(settings, store),
        worker=(
            WorkerSupervisor(settings)
            if settings.job_runner == "local" and settings.start_worker else None
        ),
        sessions=sessions,
        labeling=labeling,
        dashboard=DashboardService(store, registry, adapters.list),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = build_state(settings)
        app.state.authenticator = app.state.services.authenticator
        if app.state.services.worker is not None:
            app.state.services.worker.start()
        try:
            yield
        finally:
            app.state.services.close()

    app = FastAPI(
        title="loraloop",
        version="0.1.0",
        summary="One Llama base model, many LoRA adapters, and the RLHF loop around them.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_openapi(app)
    app.state.drain = Drain()  # set by `python -m service` on SIGTERM (service/server.py)
    app.add_middleware(ArrivalMiddleware)  # innermost: only requests the handler will see
    app.add_middleware(DrainMiddleware, drain=app.state.drain)
    for router in (
        health_router, openai_router, models_router, adapters_router, rewards_router,
        feedback_router, jobs_router, labeling_router,
    ):
        app.include_router(router)
    install_pages(app)
    install_limits(app, settings)
    # Added last, so outermost: every response carries X-Request-ID, refusals included.
    app.add_middleware(RequestIdMiddleware)
    return app
