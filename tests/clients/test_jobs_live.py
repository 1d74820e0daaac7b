"""The jobs part of the SDK and CLI against a live server with its local worker: tiny DPO jobs
(a few seconds of training on the tiny Llama) on feedback posted through the SDK, followed to
the end through `wait`, `follow_logs` and `loraloop jobs watch`, and a queued job cancelled."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from loraloop_client import Client
from loraloop_client.cli import cli

from core.settings import Settings
from tests.api_keys import ADMIN_KEY
from tests.jobs import TINY_DPO, with_worker
from training.synthetic import make_preference_rows

JOB = {**TINY_DPO, "train_steps": 3}
WAIT_SECONDS = 240  # a bound for a stalled worker; a tiny job ends in well under a minute


@pytest.fixture(scope="module")
def server_settings(server_settings: Settings) -> Settings:
    return with_worker(server_settings)


@pytest.fixture
def run(base_url: str):
    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False,
                                  env={"LORALOOP_BASE_URL": base_url, "LORALOOP_API_KEY": ADMIN_KEY})
    return invoke


def post_preferences(sdk: Client, use_case: str) -> None:
    for row in make_preference_rows(12, seed=3):
        sdk.feedback.post(use_case, 0, prompt=row["prompt"], candidates=[row["chosen"], row["rejected"]])


def test_the_sdk_runs_a_job_to_its_version_with_progress_metrics_and_logs(sdk: Client) -> None:
    post_preferences(sdk, "jobs-sdk")
    job = sdk.jobs.submit("dpo", "jobs-sdk", JOB)
    assert job.state == "queued" and job.params == JOB

    followed: list[str] = []  # the log stream, read while the job runs; it ends with the job
    follower = threading.Thread(target=lambda: followed.extend(l.line for l in sdk.jobs.follow_logs(job.id)))
    follower.start()
    seen = []
    final = sdk.jobs.wait(job.id, poll_interval=0.2, timeout=WAIT_SECONDS, on_progress=seen.append)
    follower.join(timeout=30)

    assert final.state == "succeeded", (final.error, [l.line for l in sdk.jobs.logs(job.id).data])
    assert seen[-1] is final and "running" in [j.state for j in seen]
    steps = [j.progress.step for j in seen if j.progress.step is not None]
    assert steps == sorted(steps) and steps[-1] == final.progress.total_steps == 3
    assert final.progress.fraction == 1.0
    (version,) = final.result["versions"]
    assert version["ref"] == "jobs-sdk@1"
    assert [v.version for v in sdk.adapters.get("jobs-sdk").versions] == [1]

    series = sdk.jobs.metrics(job.id)
    assert [p.step for p in series["loss"]] == [1, 2, 3]
    assert {"rewards/accuracies", "logps/margin"} <= set(series)
    assert final.metric(("loss",)) == series["loss"][-1].value
    assert sdk.jobs.metrics(job.id, "loss").keys() == {"loss"}

    assert not follower.is_alive(), "follow_logs did not end with the job"
    assert "started" in followed[0] and "succeeded" in followed[-1]
    assert followed == [l.line for l in sdk.jobs.logs(job.id, tail=1000).data]


def test_the_cli_submits_watches_lists_shows_logs_and_cancels_jobs(run, sdk: Client, tmp_path: Path) -> None:
    post_preferences(sdk, "jobs-cli")
    params = tmp_path / "dpo.json"
    params.write_text(json.dumps(TINY_DPO))
    submitted = run("jobs", "submit", "dpo", "jobs-cli", "--params", str(params), "--set", "train_steps=3")
    assert submitted.exit_code == 0, submitted.stderr
    first = submitted.stdout.strip()
    # A second job of the use case waits for the first (never two at once): cancelled queued.
    second = json.loads(run("jobs", "submit", "dpo", "jobs-cli", "--set", "train_steps=3", "--json").stdout)
    assert second["state"] == "queued"
    cancelled = run("jobs", "cancel", second["id"])
    assert cancelled.exit_code == 0 and cancelled.stdout.strip() == f"{second['id']} cancelled"
    watched = run("jobs", "watch", second["id"], "--json")
    assert watched.exit_code == 1 and f"job {second['id']} cancelled" in watched.stderr
    assert json.loads(watched.stdout)["state"] == "cancelled"

    watched = run("jobs", "watch", first, "--json", "--interval", "0.2")
    assert watched.exit_code == 0, watched.stderr
    polls = [json.loads(line) for line in watched.stdout.splitlines()]
    assert polls[-1]["state"] == "succeeded" and polls[-1]["progress"]["step"] == 3
    assert all(p["id"] == first for p in polls) and "running" in {p["state"] for p in polls}
    assert polls[-1]["params"] == JOB

    listed = json.loads(run("jobs", "ls", "--use-case", "jobs-cli", "--json").stdout)
    assert [(j["id"], j["state"]) for j in listed["data"]] == [(second["id"], "cancelled"), (first, "succeeded")]
    human = run("jobs", "ls", "--use-case", "jobs-cli", "--state", "succeeded")
    assert human.exit_code == 0 and human.stdout.split()[0] == first and second["id"] not in human.stdout
    shown = json.loads(run("jobs", "show", first, "--json").stdout)
    assert shown["result"]["versions"][0]["ref"] == "jobs-cli@1"
    human = run("jobs", "show", first)
    assert human.exit_code == 0 and "succeeded step 3/3" in human.stdout and "loss =" in human.stdout

    logs = run("jobs", "logs", first)
    assert logs.exit_code == 0 and logs.stdout == "" and f"job {first} succeeded" in logs.stderr
    followed = run("jobs", "logs", first, "--follow", "--json")
    lines = [json.loads(line)["line"] for line in followed.stdout.splitlines()]
    assert followed.exit_code == 0 and lines == logs.stderr.splitlines()
    assert run("jobs", "cancel", first).stdout.strip() == f"{first} succeeded"  # too late: unchanged
    missing = run("jobs", "show", "job-does-not-exist")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: 404")
