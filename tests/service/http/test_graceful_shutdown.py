"""SIGTERM on a real `python -m service`: readiness turns false at once, new requests get 503
with Retry-After, generations in flight finish (and are logged) within shutdown_timeout_seconds
or are cut at that deadline with a 503 the client can act on, the local job worker hands its
running job back to the queue, then the process exits 0."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx

from core.store import FeedbackCreate, JobState, Store
from tests.http_errors import assert_error
from tests.jobs import TINY_DPO
from tests.service_process import alive, server_env, server_process
from training.synthetic import make_preference_rows

# A server that does only what a test asks of it: no alias polling, no local job worker.
QUIET = {"alias_poll_seconds": 0, "start_worker": False}
LONG = 1500  # tokens: a generation that outlasts the checks made while it runs


def _stream(client: httpx.Client, max_tokens: int):
    body = {"model": "base", "prompt": "Once upon a time", "max_tokens": max_tokens,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    return client.stream("POST", "/v1/completions", json=body)


def _events(lines) -> list:
    """The SSE payloads: JSON objects, and the final "[DONE]" as is."""
    return [
        line.removeprefix("data: ") if line == "data: [DONE]" else json.loads(line.removeprefix("data: "))
        for line in lines if line
    ]


def test_sigterm_refuses_new_work_finishes_the_stream_logs_it_and_exits_0(tmp_path, tiny_llama_dir):
    env = server_env(tmp_path / "data", tiny_llama_dir, **QUIET, shutdown_timeout_seconds=120,
                     max_new_tokens=LONG)
    with server_process(env, log_level="info") as server:
        with httpx.Client(base_url=server.url, timeout=60) as client, _stream(client, LONG) as stream:
            lines = stream.iter_lines()
            first = next(lines)
            server.process.send_signal(signal.SIGTERM)

            # At once, while the stream runs: not ready, alive, and new work refused.
            assert client.get("/readyz").status_code == 503
            assert client.get("/readyz").json() == {"status": "draining"}
            assert client.get("/healthz").status_code == 200
            refused = client.post("/v1/completions", json={"model": "base", "prompt": "Hi"})
            assert_error(refused, 503, "api_error", contains="shutting down")
            assert refused.json()["error"]["code"] == "unavailable"
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.headers["connection"] == "close"
            assert server.process.poll() is None, "the server left before its stream ended"

            events = _events([first, *lines])
            ended = time.monotonic()
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert not any("error" in chunk for chunk in chunks), chunks[-3:]
        assert chunks[-1]["usage"]["completion_tokens"] == LONG  # the whole generation
        (completion_id,) = [c["completion_id"] for c in chunks if c["completion_id"]]  # the last token's
        assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"])

        assert server.process.wait(timeout=60) == 0
        assert time.monotonic() - ended < 30, "the server waited on after its last request"

    with Store.open(env["LORALOOP_DATABASE_URL"]) as store:
        logged = store.completions.get(completion_id)
    assert logged.completion_tokens == LONG
    assert logged.sampling_params["finish_reason"] == "length"


def test_a_generation_outlasting_the_grace_period_is_cut_with_a_503(tmp_path, tiny_llama_dir):
    # 4000 tokens take several seconds even on a fast CPU; the grace period is 1 s.
    env = server_env(tmp_path / "data", tiny_llama_dir, **QUIET, shutdown_timeout_seconds=1,
                     max_new_tokens=4000)
    body = {"model": "base", "prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": True}
    with server_process(env, log_level="info") as server:
        plain: list[httpx.Response] = []
        with httpx.Client(base_url=server.url, timeout=60) as client:
            waiter = threading.Thread(target=lambda: plain.append(client.post("/v1/completions", json=body)))
            waiter.start()
            with _stream(client, 4000) as stream:
                lines = stream.iter_lines()
                first = next(lines)
                _wait_running(client, 2)  # the plain request is in the batch too
                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                events = _events([first, *lines])
                cut_after = time.monotonic() - signalled
            waiter.join(timeout=60)

        # A stream ends with an error event, then [DONE]; it has not run to its end.
        assert events[-1] == "[DONE]"
        error = events[-2]["error"]
        assert error["code"] == "unavailable" and "shutdown_timeout_seconds" in error["message"]
        tokens = sum(1 for e in events[:-2] if e["choices"])
        assert 0 < tokens < 4000
        assert 1 <= cut_after < 10
        # A plain request gets 503 with Retry-After: an OpenAI client retries it elsewhere.
        (response,) = plain
        assert_error(response, 503, "api_error", contains="shutdown_timeout_seconds")
        assert int(response.headers["retry-after"]) >= 1

        assert server.process.wait(timeout=60) == 0
        assert time.monotonic() - signalled < 1 + 20
    assert "cutting them" in server.log.read_text()


def _wait_running(client: httpx.Client, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("vllm:num_requests_running{") and float(line.split()[-1]) >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"{count} requests never ran at once")


def test_sigterm_hands_the_running_job_back_to_the_queue(tmp_path, tiny_llama_dir):
    env = server_env(
        tmp_path / "data", tiny_llama_dir, alias_poll_seconds=0, start_worker=True, worker_poll_seconds=0.2,
        job_heartbeat_seconds=0.5, job_heartbeat_timeout_seconds=30, job_cancel_grace_seconds=5,
    )
    (tmp_path / "data").mkdir()
    with Store.open(env["LORALOOP_DATABASE_URL"]) as store:
        for row in make_preference_rows(16, seed=3):
            store.feedback.add(FeedbackCreate(
                "qa", 0, prompt=row["prompt"], candidates=(row["chosen"], row["rejected"])))
    with server_process(env, log_level="info") as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            created = client.post("/v1/jobs", json={
                "kind": "dpo", "use_case": "qa", "params": {**TINY_DPO, "train_steps": 5000},
                "max_attempts": 2,
            })
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            deadline = time.monotonic() + 300
            while (client.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] or 0) < 1:
                assert time.monotonic() < deadline, "the job never started training"
                time.sleep(0.2)
            run_job_pid = int(client.get(f"/v1/jobs/{job_id}").json()["worker"].rsplit(":", 1)[1])

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0

    # Not left running: the attempt was given up by its own process and the job re-queued,
    # to run again (attempt 2) under the next server.
    with Store.open(env["LORALOOP_DATABASE_URL"]) as store:
        job = store.jobs.get(job_id)
        logs = [line.line for line in store.jobs.logs(job_id)]
    assert (job.state, job.attempts) == (JobState.QUEUED, 1), (job.error, logs[-5:])
    assert any("terminated by signal SIGTERM" in line and "re-queued" in line for line in logs), logs[-5:]
    assert not alive(run_job_pid)
