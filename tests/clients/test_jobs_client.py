"""The jobs part of the SDK and CLI against a scripted HTTP server: the cases a live server
cannot be made to show at will (a job seen queued, running and ended in three polls; a failed
job). test_jobs_live.py runs the same calls against the real server and its worker."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner
from loraloop_client import AsyncClient, Client
from loraloop_client.cli import cli

from tests.clients.fault_server import Events, Reply, fault_server, scripted


def job(state: str, step: int | None, **extra) -> Reply:
    return Reply(200, {"object": "job", "id": "job-1", "kind": "ppo", "use_case": "demo", "state": state,
                       "attempt": 1, "progress": {"step": step, "total_steps": 10, "fraction": 0.0,
                                                  "eta_seconds": 12.0},
                       "metrics": {"objective/scores": 0.5, "objective/kl": 0.02, "loss/policy_avg": 0.3},
                       "a_field_added_later": True, **extra})


RUN = [job("queued", None), job("running", 4), job("succeeded", 10, result={"versions": ["demo@2"]})]


def test_wait_polls_to_the_end_and_reports_every_state():
    seen = []
    with fault_server(scripted({("GET", "/v1/jobs/job-1"): list(RUN)})) as (url, _):
        with Client(url, "k") as client:
            final = client.jobs.wait("job-1", poll_interval=0.01, on_progress=lambda j: seen.append(j.state))
    assert seen == ["queued", "running", "succeeded"]
    assert final.finished and final.result == {"versions": ["demo@2"]}
    assert final.model_extra == {"object": "job", "a_field_added_later": True}


def test_jobs_watch_prints_progress_on_stderr_and_exits_by_the_outcome():
    runner = CliRunner()
    with fault_server(scripted({("GET", "/v1/jobs/job-1"): list(RUN)})) as (url, _):
        done = runner.invoke(cli, ["--base-url", url, "jobs", "watch", "job-1", "--interval", "0.01"])
    assert done.exit_code == 0 and done.stdout == ""
    assert "running step 4/10 ETA 12s reward 0.5 kl 0.02 loss 0.3" in done.stderr
    failed = [job("running", 4), job("failed", 4, error="reward model gate failed")]
    with fault_server(scripted({("GET", "/v1/jobs/job-1"): failed})) as (url, _):
        done = runner.invoke(cli, ["--base-url", url, "jobs", "watch", "job-1", "--interval", "0.01", "--json"])
    assert done.exit_code == 1 and "reward model gate failed" in done.stderr
    assert [json.loads(line)["state"] for line in done.stdout.splitlines()] == ["running", "failed"]


def test_jobs_submit_sends_nested_overrides_and_one_idempotency_key():
    with fault_server(scripted({("POST", "/v1/jobs"): [Reply(201, RUN[0].body)]})) as (url, server):
        done = CliRunner().invoke(cli, ["--base-url", url, "jobs", "submit", "round", "demo", "--set",
                                        "algorithm=dpo", "--set", "policy.train_steps=20"])
    assert done.exit_code == 0 and done.stdout.strip() == "job-1"
    (sent,) = server.requests_to("POST", "/v1/jobs")
    assert json.loads(sent.body) == {"kind": "round", "use_case": "demo",
                                     "params": {"algorithm": "dpo", "policy": {"train_steps": 20}}}
    assert sent.headers["Idempotency-Key"].startswith("loraloop-")


def test_follow_logs_waits_through_a_quiet_stream_longer_than_the_read_timeout():
    # A queued job logs nothing until it starts: the server's stream stays silent, for longer
    # than the read timeout, more times than max_retries. Following must wait on, not fail.
    with fault_server(scripted({("GET", "/v1/jobs/job-1/logs"): quiet_then_a_line()})) as (url, server):
        with Client(url, "k", timeout=0.2, max_retries=2) as client:
            lines = [log.line for log in client.jobs.follow_logs("job-1")]
    assert lines == ["job started"] and len(server.requests_to("GET", "/v1/jobs/job-1/logs")) == 5

    async def follow(url: str) -> list[str]:
        async with AsyncClient(url, "k", timeout=0.2, max_retries=2) as client:
            return [log.line async for log in client.jobs.follow_logs("job-1")]

    with fault_server(scripted({("GET", "/v1/jobs/job-1/logs"): quiet_then_a_line()})) as (url, _):
        assert asyncio.run(follow(url)) == ["job started"]


def quiet_then_a_line() -> list[Events]:
    quiet = Events(": nothing yet\n\n", delay=0.6)
    line = 'id: 7\ndata: {"seq": 7, "line": "job started"}\n\nevent: end\ndata: {"state": "succeeded"}\n\n'
    return [quiet] * 4 + [Events(line)]
