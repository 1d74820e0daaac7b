"""/ui (dashboard) and /ui/label (the labeling page): server-rendered Jinja2 pages, htmx for
the vote, uPlot for job plots; the scripts are vendored files under /ui/static (no network).

Routers stay thin: every read and write goes through a service object. The ui is the one
feature that composes others: the labeling pages are the labeling feature's HTML face and call
its service object (``LabelingService``, public methods only); the dashboard calls this
feature's ``DashboardService``. No other feature imports the ui (pyproject's import contracts).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from core.errors import LoraloopError
from core.settings import Scope
from service.auth import Authenticator
from service.labeling.protocol import QueueCreate, QueueFill
from service.labeling.service import LabelingService
from service.ui.service import DashboardService
from service.ui.sessions import (
    COOKIE,
    LabelerCaller,
    PageAdminCaller,
    Sessions,
    SignInRequired,
    get_sessions,
)
from service.ui.svg import interval_bar, sparkline

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals.update(sparkline=sparkline, interval_bar=interval_bar)
router = APIRouter(prefix="/ui", include_in_schema=False)


async def get_dashboard(request: Request) -> DashboardService:
    return request.app.state.services.dashboard


async def get_labeling(request: Request) -> LabelingService:
    return request.app.state.services.labeling


DashboardDep = Annotated[DashboardService, Depends(get_dashboard)]
LabelingDep = Annotated[LabelingService, Depends(get_labeling)]
SessionsDep = Annotated[Sessions, Depends(get_sessions)]


def install(app: FastAPI) -> None:
    """Mount the pages, their static files, and the redirect to the sign-in form."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, error: SignInRequired) -> Response:
        target = f"/ui/login?next={quote(error.next_url)}"
        if request.headers.get("HX-Request"):  # htmx: reload the whole page at the form
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)


def may(request: Request, name: str, scope: Scope) -> bool:
    authenticator: Authenticator = request.app.state.authenticator
    if authenticator.open:
        return True
    try:
        authenticator.named(name, scope)
        return True
    except HTTPException:
        return False


def page(request: Request, name: str, caller: str, **context: object) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"caller": caller, "is_admin": may(request, caller, "admin"), **context}
    )


# --- sign-in ---


def safe_next(next_url: str) -> str:
    # Only our own pages: an open redirect would let a link send a labeler elsewhere.
    return next_url if next_url.startswith("/ui") and not next_url.startswith("//") else "/ui/label"


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/ui/label") -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login")
async def login(
    request: Request, sessions: SessionsDep, key: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/ui/label",
) -> Response:
    authenticator: Authenticator = request.app.state.authenticator
    client = request.client.host if request.client else None
    try:
        name = authenticator.caller(f"Bearer {key}", "feedback", client)
    except HTTPException as error:
        return templates.TemplateResponse(
            request, "login.html", {"next": safe_next(next), "error": error.detail}, status_code=error.status_code
        )
    response = RedirectResponse(safe_next(next), status_code=303)
    sessions.issue(response, name, secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


# --- labeling ---


@router.get("/label", response_class=HTMLResponse)
async def label_index(request: Request, caller: LabelerCaller, labeling: LabelingDep) -> HTMLResponse:
    queues = await asyncio.to_thread(labeling.queues)
    return page(request, "label_index.html", caller, queues=queues, error=request.query_params.get("error"))


@router.post("/label/queues")
async def create_queue(
    caller: PageAdminCaller, labeling: LabelingDep, use_case: Annotated[str, Form()],
    name: Annotated[str, Form()] = "", guidelines: Annotated[str, Form()] = "",
    overlap: Annotated[int, Form()] = 1,
) -> Response:
    try:
        body = QueueCreate(use_case=use_case, name=name, guidelines=guidelines, overlap=overlap)
        await asyncio.to_thread(labeling.create_queue, body, caller)
    except (LoraloopError, ValueError) as error:
        return RedirectResponse(f"/ui/label?error={quote(str(error))}", status_code=303)
    return RedirectResponse("/ui/label", status_code=303)


@router.post("/label/{queue_id}/pairs")
async def fill_queue(
    queue_id: str, caller: PageAdminCaller, labeling: LabelingDep,
    source: Annotated[str, Form()], a: Annotated[str, Form()], b: Annotated[str, Form()] = "",
    prompts: Annotated[str, Form()] = "", limit: Annotated[int, Form()] = 20,
) -> Response:
    try:
        body = QueueFill(
            source=source, a=a.strip(), b=b.strip() or None, limit=limit,
            prompts=[p.strip() for p in prompts.split("\n---\n") if p.strip()],
        )
        if body.source == "generate":
            report = await labeling.fill_generated(queue_id, body)
        else:
            report = await asyncio.to_thread(labeling.fill_from_log, queue_id, body)
    except (LoraloopError, ValueError) as error:
        return RedirectResponse(f"/ui/label?error={quote(str(error))}", status_code=303)
    note = f"added {report.added} pairs" + (f", skipped {report.skipped}" if report.skipped else "")
    return RedirectResponse(f"/ui/label?error={quote(note)}", status_code=303)


@router.get("/label/{queue_id}", response_class=HTMLResponse)
async def label(request: Request, queue_id: str, caller: LabelerCaller, labeling: LabelingDep) -> HTMLResponse:
    queue, item = await asyncio.to_thread(labeling.next_item, queue_id, caller)
    return page(request, "label.html", caller, queue=queue, item=item, reveal=None)


@router.post("/label/{queue_id}/votes", response_class=HTMLResponse)
async def vote(
    request: Request, queue_id: str, caller: LabelerCaller, labeling: LabelingDep,
    pair_id: Annotated[int, Form()], choice: Annotated[str, Form()],
    shown_at_ms: Annotated[int | None, Form()] = None, rationale: Annotated[str, Form()] = "",
) -> Response:
    reveal = await asyncio.to_thread(
        labeling.vote, queue_id, caller, pair_id, choice, shown_at_ms, rationale
    )
    if not request.headers.get("HX-Request"):  # a plain form post (no script): back to the page
        return RedirectResponse(f"/ui/label/{queue_id}", status_code=303)
    queue, item = await asyncio.to_thread(labeling.next_item, queue_id, caller)
    return templates.TemplateResponse(request, "_pair.html", {"queue": queue, "item": item, "reveal": reveal})


# --- dashboard ---


@router.get("", response_class=HTMLResponse)
async def dashboard(
    request: Request, caller: LabelerCaller, dashboard: DashboardDep, a: str | None = None, b: str | None = None
) -> HTMLResponse:
    adapters = await asyncio.to_thread(dashboard.adapter_list)
    jobs = await asyncio.to_thread(dashboard.jobs)
    comparisons = await asyncio.to_thread(dashboard.comparisons, adapters)
    chosen, error = None, None
    if a and b:
        try:
            chosen = await asyncio.to_thread(
                dashboard.compare, dashboard.version(a, "a"), dashboard.version(b, "b")
            )
        except LoraloopError as e:
            error = str(e)
    return page(
        request, "dashboard.html", caller, adapters=adapters, jobs=jobs, comparisons=comparisons,
        chosen=chosen, error=error, a=a or "", b=b or "",
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job(request: Request, job_id: str, caller: LabelerCaller, dashboard: DashboardDep) -> HTMLResponse:
    job, plots = await asyncio.to_thread(dashboard.job, job_id)
    data = [{"title": p.title, "metric": p.metric, "x": p.steps, "y": p.values} for p in plots]
    return page(request, "job.html", caller, job=job, plots=plots, plot_data=json.dumps(data).replace("<", "\\u003c"))
