"""``loraloop jobs submit|ls|show|watch|logs|cancel``.

``watch`` shows a live progress bar (step, ETA, reward, KL, loss) on stderr; Ctrl-C detaches
and leaves the job running. With ``--json`` it prints one JSON line per poll on stdout instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn

from loraloop_client.cli._common import (
    CliState,
    emit_json,
    json_option,
    parse_assignments,
    pass_state,
)
from loraloop_client.resources.jobs import KL_SERIES, LOSS_SERIES, REWARD_SERIES, Job

DETACHED_EXIT_CODE = 130  # what a shell reports for Ctrl-C


@click.group()
def jobs() -> None:
    """Submit, follow and cancel training jobs."""


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def status_line(job: Job) -> str:
    """``running step 40/170 ETA 1m11s reward 0.5 kl 0.01 loss 0.4``."""
    p = job.progress
    step = f"step {p.step if p.step is not None else '-'}/{p.total_steps if p.total_steps is not None else '-'}"
    return (f"{job.state} {step} ETA {_eta(p.eta_seconds)} reward {_fmt(job.metric(REWARD_SERIES))} "
            f"kl {_fmt(job.metric(KL_SERIES))} loss {_fmt(job.metric(LOSS_SERIES))}")


def _exit_for(state: CliState, job: Job) -> None:
    if job.state != "succeeded":
        state.stderr.print(f"job {job.id} {job.state}" + (f": {job.error}" if job.error else ""))
        raise click.exceptions.Exit(1)


def watch_job(state: CliState, job_id: str, interval: float) -> None:
    """Follow a job to its end; exit 1 unless it succeeded; Ctrl-C detaches."""
    client = state.client()
    try:
        if state.json:
            final = client.jobs.wait(job_id, poll_interval=interval, on_progress=emit_json)
        elif state.stderr.is_terminal:
            final = _watch_with_bar(state, job_id, interval)
        else:
            last: list[str] = []

            def report(job: Job) -> None:
                line = status_line(job)
                if line != (last[-1] if last else None):
                    state.stderr.print(f"{job.id} {line}")
                    last.append(line)

            final = client.jobs.wait(job_id, poll_interval=interval, on_progress=report)
    except KeyboardInterrupt:
        state.stderr.print(f"detached: job {job_id} keeps running (`loraloop jobs cancel {job_id}` to stop it)")
        raise click.exceptions.Exit(DETACHED_EXIT_CODE) from None
    _exit_for(state, final)
    if not state.json:
        state.stderr.print(f"job {final.id} succeeded")


def _watch_with_bar(state: CliState, job_id: str, interval: float) -> Job:
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=state.stderr, transient=False) as bar:
        task = bar.add_task(job_id, total=None, status="")

        def report(job: Job) -> None:
            bar.update(task, total=job.progress.total_steps, completed=job.progress.step or 0,
                       status=status_line(job), description=f"{job.kind} {job.use_case}")

        return state.client().jobs.wait(job_id, poll_interval=interval, on_progress=report)


@jobs.command("submit")
@click.argument("kind", type=click.Choice(["reward", "ppo", "dpo", "round"]))
@click.argument("use_case")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="A config override, dotted for nesting: policy.train_steps=20 (repeatable).")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON file of config overrides (--set wins).")
@click.option("--max-attempts", type=click.IntRange(min=1))
@click.option("--idempotency-key", help="Makes a repeated submission queue one job.")
@click.option("--watch", "then_watch", is_flag=True, help="Then watch it to the end.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls with --watch.")
@json_option
@pass_state
def submit(
    state: CliState, kind: str, use_case: str, assignments: tuple[str, ...], params_file: Path | None,
    max_attempts: int | None, idempotency_key: str | None, then_watch: bool, interval: float,
) -> None:
    """Queue a KIND job (reward, ppo, dpo or round) for USE_CASE."""
    params = json.loads(params_file.read_text()) if params_file else {}
    params = _merge(params, parse_assignments(assignments))
    job = state.client().jobs.submit(kind, use_case, params, max_attempts=max_attempts,  # type: ignore[arg-type]
                                     idempotency_key=idempotency_key)
    if state.json:
        emit_json(job)
    else:
        state.stdout.print(job.id)
    if then_watch:
        watch_job(state, job.id, interval)


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


@jobs.command("ls")
@click.option("--use-case")
@click.option("--state", "states", multiple=True, type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]))
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--after", help="The last id of the previous page.")
@json_option
@pass_state
def list_jobs(state: CliState, use_case: str | None, states: tuple[str, ...], limit: int, after: str | None) -> None:
    """Jobs, newest first."""
    page = state.client().jobs.list(use_case=use_case, state=list(states) or None, limit=limit, after=after)
    if state.json:
        return emit_json(page)
    for job in page.data:
        state.stdout.print(f"{job.id}  {job.kind:6} {job.use_case:20} {status_line(job)}")
    if page.has_more:
        state.stderr.print(f"more: --after {page.last_id}")


@jobs.command("show")
@click.argument("job_id")
@json_option
@pass_state
def show(state: CliState, job_id: str) -> None:
    """A job: state, attempt, progress, latest metrics, result, error."""
    job = state.client().jobs.get(job_id)
    if state.json:
        return emit_json(job)
    state.stdout.print(f"{job.id} {job.kind} {job.use_case} attempt {job.attempt}")
    state.stdout.print(status_line(job))
    for name, value in sorted(job.metrics.items()):
        state.stdout.print(f"  {name} = {_fmt(value, '.4g')}")
    if job.result:
        state.stdout.print_json(data=job.result)
    if job.error:
        state.stdout.print(f"error: {job.error}")


@jobs.command("watch")
@click.argument("job_id")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls.")
@json_option
@pass_state
def watch(state: CliState, job_id: str, interval: float) -> None:
    """Follow a job to its end (exit 1 unless it succeeds); Ctrl-C detaches, the job runs on."""
    watch_job(state, job_id, interval)


@jobs.command("logs")
@click.argument("job_id")
@click.option("--tail", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
@json_option
@pass_state
def logs(state: CliState, job_id: str, tail: int, follow: bool) -> None:
    """A job's log: lines on stderr (NDJSON on stdout with --json)."""
    client = state.client()
    lines = client.jobs.follow_logs(job_id, tail=tail) if follow else client.jobs.logs(job_id, tail=tail).data
    try:
        for line in lines:
            if state.json:
                emit_json(line)
            else:
                click.echo(line.line, err=True)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(DETACHED_EXIT_CODE) from None


@jobs.command("cancel")
@click.argument("job_id")
@json_option
@pass_state
def cancel(state: CliState, job_id: str) -> None:
    """Cancel a job: a queued one at once, a running one at its next step."""
    job = state.client().jobs.cancel(job_id)
    if state.json:
        return emit_json(job)
    state.stdout.print(f"{job.id} {job.state}{' (cancel requested)' if job.cancel_requested and not job.finished else ''}")
