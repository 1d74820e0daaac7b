"""The server, its job worker and the running job's process SIGKILLed together at a random moment
of a training job, while clients post feedback. After the restart: the stale job is
taken up again (never left running), its last attempt finishes it, every registered version is
complete (its files present and matching their sha256), and every acknowledged feedback post is
stored once (clients retry unanswered posts with the same Idempotency-Key).

The kill moments come from a seeded random generator; the seed is in every failure message
(set LORALOOP_TEST_SEED to replay one)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from core.base.folders import base_model_info
from core.registry import open_registry
from core.settings import Settings
from core.store import FeedbackCreate, Store
from tests.jobs import TINY_DPO
from tests.ports import free_port
from tests.service_process import child_pids, server_env, server_process
from training.synthetic import make_preference_rows

DPO_PARAMS = {**TINY_DPO, "train_steps": 20}
KILLS = 1  # each kill costs a server start and a job start: CI time
# A kill lands once the attempt reports this step (at random, up to half its steps): a moment
# counted in steps, not seconds, so that a fast machine cannot finish the job before the kill.
LAST_KILL_STEP = DPO_PARAMS["train_steps"] // 2
JOB_TIMEOUT_SECONDS = 300  # only a failure waits this long


class FeedbackClients:
    """Two clients posting feedback; a post is acknowledged by a 201, else resent later."""

    def __init__(self) -> None:
        self.acked: set[str] = set()
        self.unanswered: list[str] = []
        self.refused: list[str] = []  # answers other than 201
        self.lock = threading.Lock()

    def run(self, url: str, stop: threading.Event, prefix: str) -> list[threading.Thread]:
        def client(index: int) -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                for n in range(1_000_000):
                    if stop.is_set():
                        return
                    key = f"{prefix}{index}-{n}"
                    if not self.post(http, key):
                        return  # the server died under us (or refused: reported at the end)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        return threads

    def post(self, http: httpx.Client, key: str) -> bool:
        body = {"use_case": "durable", "prompt": f"prompt {key}", "candidates": ["a", "b"], "choice": 0}
        try:
            r = http.post("/v1/feedback", json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            with self.lock:
                self.unanswered.append(key)
            return False
        with self.lock:
            if r.status_code == 201:
                self.acked.add(key)
            else:
                self.refused.append(f"{key}: {r.status_code} {r.text}")
        return r.status_code == 201


def kill_everything(server: subprocess.Popen) -> None:
    """SIGKILL the server, its worker and the worker's job processes at once (a lost node)."""
    workers = child_pids(server.pid)
    jobs = [pid for worker in workers for pid in child_pids(worker)]
    server.send_signal(signal.SIGKILL)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    for pid in jobs:
        os.killpg(pid, signal.SIGKILL)  # run-job leads its own process group


def wait_job(http: httpx.Client, job_id: str, until, what: str, seed: int) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    while True:
        job = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"seed {seed}: job never {what}: {job}"
        time.sleep(0.2)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_random_kills_lose_no_feedback_leave_no_half_version_and_no_stuck_job(
    tmp_path: Path, tiny_llama_dir: Path, database_url: str
) -> None:
    seed = int(os.environ.get("LORALOOP_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    with Store.open(database_url) as store:
        for row in make_preference_rows(16, seed=3):
            store.feedback.add(FeedbackCreate("qa", 0, prompt=row["prompt"],
                                              candidates=(row["chosen"], row["rejected"])))
    data = tmp_path / "data"
    env = server_env(
        data, tiny_llama_dir, database_url=database_url, base_model_id="tiny-llama",
        alias_poll_seconds=0, worker_poll_seconds=0.2, job_heartbeat_seconds=1,
        job_heartbeat_timeout_seconds=5,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    feedback = FeedbackClients()
    job_id = None
    kill_points = []
    http = httpx.Client(base_url=url, timeout=30)
    for round_ in range(KILLS + 1):
        with server_process(env, port) as server:
            stop = threading.Event()
            unanswered, feedback.unanswered = feedback.unanswered, []
            for key in unanswered:  # resent, same key, after the restart
                assert feedback.post(http, key), f"seed {seed}: {key}: {feedback.refused[-1:]}"
            threads = feedback.run(url, stop, prefix=f"r{round_}c")
            try:
                if job_id is None:
                    r = http.post("/v1/jobs", json={"kind": "dpo", "use_case": "qa", "params": DPO_PARAMS,
                                                    "max_attempts": KILLS + 1})
                    assert r.status_code == 201, r.text
                    job_id = r.json()["id"]
                if round_ < KILLS:
                    attempt = round_ + 1
                    wait_job(http, job_id, lambda j: j["state"] == "running" and j["attempt"] == attempt,
                             f"ran attempt {attempt}", seed)
                    target = rng.randint(0, LAST_KILL_STEP)
                    wait_job(http, job_id, lambda j: (j["progress"]["step"] or 0) >= target,
                             f"reached step {target}", seed)
                    step = http.get(f"/v1/jobs/{job_id}").json()["progress"]["step"]
                    kill_points.append((target, step))
                    kill_everything(server.process)
                    server.process.wait(timeout=30)
                else:
                    job = wait_job(http, job_id, lambda j: j["state"] not in ("queued", "running"),
                                   "finished", seed)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=30)
    http.close()

    context = f"seed {seed}, kills at (target step, reported step) {kill_points}"
    assert not feedback.refused, f"{context}: {feedback.refused[:5]}"
    assert job["state"] == "succeeded", f"{context}: {job}"
    assert job["attempt"] == KILLS + 1, f"{context}: {job}"
    with Store.open(database_url) as store:
        assert not [j for j in store.jobs.list() if not j.state.finished], context
        prompts = [row["input_text"] for row in store.feedback.export("durable", "vertex")]
    assert len(prompts) == len(set(prompts)), f"{context}: a post was stored twice"
    stored = {p.removeprefix("prompt ") for p in prompts}
    assert feedback.acked <= stored, f"{context}: acknowledged posts lost"

    settings = Settings(data_dir=data, base_model=str(tiny_llama_dir), base_model_id="tiny-llama",
                        device="cpu", database_url=database_url)
    registry = open_registry(settings, base_model_info(settings))
    versions = registry.list_versions("qa")
    assert job["result"]["versions"][0]["ref"] in {f"qa@{v}" for v in versions}, context
    for version in versions:  # each one visible is whole: fetch checks every file's sha256
        registry.fetch("qa", version)
    print(f"{context}: versions {versions}, {len(feedback.acked)} feedback posts acknowledged")
