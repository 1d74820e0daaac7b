"""/healthz (the process answers), /readyz (the model is loaded and serving, and the server is
not draining), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: the process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: starting, or draining.", "content": {"application/json": {}}}},
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the base model is loaded, the engine runs and the server is not draining."""
    if request.app.state.drain.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    services = getattr(request.app.state, "services", None)
    if services is None or not services.engine.alive:
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse({"status": "ready", "model": services.base_info.model_id})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (vLLM-compatible names plus per-adapter series)."""
    services = request.app.state.services
    services.metrics.observe_engine(services.engine)
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
