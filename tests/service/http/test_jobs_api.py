"""/v1/jobs over HTTP: submit with validated overrides and idempotency keys, list and page,
progress with an ETA, metrics, logs (tail and server-sent events), cancel, scopes. No worker
runs here: the test plays the job's runner through the store."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from core.settings import Settings
from core.store import Store
from tests.api_keys import FEEDBACK_KEY, INFER_KEY, auth


@pytest.fixture
def store(server_settings: Settings) -> Iterator[Store]:
    with Store.from_settings(server_settings) as opened:
        yield opened


def submit(client: httpx.Client, **body) -> httpx.Response:
    return client.post("/v1/jobs", json={"kind": "dpo", "use_case": "summarize", **body})


def test_a_bad_override_is_a_400_naming_the_field(client: httpx.Client) -> None:
    for params, field in (
        ({"learning_rate": -1}, "params.learning_rate"),
        ({"gates": {"max_kl": -2}}, "params.gates.max_kl"),
        ({"train_stepz": 3}, "params.train_stepz"),
        ({"adapter": "other"}, "params.adapter"),
    ):
        response = submit(client, params=params)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == field
    bad_round = client.post("/v1/jobs", json={
        "kind": "round", "use_case": "summarize", "params": {"policy": {"beta": 0}}})
    assert bad_round.json()["error"]["param"] == "params.policy.beta"
    assert submit(client, kind="sft").status_code == 400


def test_submitting_needs_admin_and_reading_needs_any_key(base_url: str, client: httpx.Client) -> None:
    job = submit(client, params={"train_steps": 2}).json()
    for key in (INFER_KEY, FEEDBACK_KEY):
        with httpx.Client(base_url=base_url, headers=auth(key)) as other:
            assert submit(other).status_code == 403
            assert other.get(f"/v1/jobs/{job['id']}").status_code == 200
            assert other.get("/v1/jobs").status_code == 200
            assert other.post(f"/v1/jobs/{job['id']}/cancel").status_code == 403
    with httpx.Client(base_url=base_url) as anonymous:
        assert anonymous.get(f"/v1/jobs/{job['id']}").status_code == 401


def test_an_idempotency_key_returns_the_same_job_and_refuses_another_body(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "round-7"}
    first = client.post("/v1/jobs", headers=headers, json={"kind": "dpo", "use_case": "support"})
    again = client.post("/v1/jobs", headers=headers, json={"kind": "dpo", "use_case": "support"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/v1/jobs", headers=headers, json={"kind": "ppo", "use_case": "support"})
    assert other.status_code == 409


def test_jobs_are_listed_by_use_case_and_state_a_page_at_a_time(client: httpx.Client) -> None:
    ids = [submit(client, use_case="pages").json()["id"] for _ in range(3)]
    first = client.get("/v1/jobs", params={"use_case": "pages", "limit": 2}).json()
    assert [j["id"] for j in first["data"]] == ids[:0:-1] and first["has_more"]
    rest = client.get("/v1/jobs", params={"use_case": "pages", "after": first["last_id"]}).json()
    assert [j["id"] for j in rest["data"]] == ids[:1] and not rest["has_more"]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    cancelled = client.get("/v1/jobs", params={"use_case": "pages", "state": "cancelled"}).json()
    assert [j["id"] for j in cancelled["data"]] == [ids[0]]


def test_a_running_job_shows_steps_an_eta_its_latest_metrics_and_series(
    client: httpx.Client, store: Store
) -> None:
    job_id = submit(client, use_case="progress").json()["id"]
    assert client.get(f"/v1/jobs/{job_id}").json()["progress"] == {
        "step": None, "total_steps": None, "fraction": 0.0, "eta_seconds": None}
    store.job_queries.claim(job_id, "test-runner")
    for step in (1, 2, 3):
        store.jobs.add_metrics(job_id, 1, step, {"loss": 1.0 / step, "rewards/accuracies": 0.5})
    store.job_queries.set_steps(job_id, 1, 3, 12)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "running" and job["attempt"] == 1
    assert job["progress"]["step"] == 3 and job["progress"]["total_steps"] == 12
    assert job["progress"]["fraction"] == 0.25 and job["progress"]["eta_seconds"] >= 0
    assert job["metrics"] == {"loss": pytest.approx(1 / 3), "rewards/accuracies": 0.5}
    series = client.get(f"/v1/jobs/{job_id}/metrics").json()["series"]
    assert [p["step"] for p in series["loss"]] == [1, 2, 3]
    only = client.get(f"/v1/jobs/{job_id}/metrics", params={"name": "loss"}).json()["series"]
    assert list(only) == ["loss"]
    store.jobs.finish(job_id, 1, "succeeded", result={"versions": [{"ref": "progress@1"}]})
    done = client.get(f"/v1/jobs/{job_id}").json()
    assert done["result"]["versions"][0]["ref"] == "progress@1" and done["progress"]["eta_seconds"] is None


def test_logs_tail_and_follow_as_server_sent_events_until_the_job_ends(
    client: httpx.Client, store: Store
) -> None:
    job_id = submit(client, use_case="logs").json()["id"]
    store.job_queries.claim(job_id, "test-runner")
    store.jobs.add_logs(job_id, 1, [f"line {i}" for i in range(5)])
    tail = client.get(f"/v1/jobs/{job_id}/logs", params={"tail": 2}).json()
    assert [line["line"] for line in tail["data"]] == ["line 3", "line 4"]
    after = client.get(f"/v1/jobs/{job_id}/logs", params={"after": tail["data"][0]["seq"]}).json()
    assert [line["line"] for line in after["data"]] == ["line 4"]

    first_event = threading.Event()
    events: list[str] = []

    def follow() -> None:
        with client.stream("GET", f"/v1/jobs/{job_id}/logs",
                           params={"tail": 1, "follow": "true"}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith(("data:", "event:")):
                    events.append(line)
                    first_event.set()

    reader = threading.Thread(target=follow)
    reader.start()
    assert first_event.wait(30)
    store.jobs.add_logs(job_id, 1, ["line 5"])
    store.jobs.finish(job_id, 1, "succeeded")
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert '"line 4"' in events[0] and any('"line 5"' in e for e in events)
    assert events[-2:] == ["event: end", 'data: {"state": "succeeded"}']


def test_cancel_ends_a_queued_job_and_flags_a_running_one(client: httpx.Client, store: Store) -> None:
    queued = submit(client, use_case="cancel-a").json()["id"]
    assert client.post(f"/v1/jobs/{queued}/cancel").json()["state"] == "cancelled"
    running = submit(client, use_case="cancel-b").json()["id"]
    store.job_queries.claim(running, "test-runner")
    flagged = client.post(f"/v1/jobs/{running}/cancel").json()
    assert flagged["state"] == "running" and flagged["cancel_requested"]
    assert client.post("/v1/jobs/job-nope/cancel").status_code == 404
