"""The whole loop through HTTP alone, by running docs/loop.md as written (but for the port):
serve, upload a first version, generate, post 200 preferences, submit a round job, follow it,
then check over HTTP that the new version is registered with its lineage, passed its gates,
moved NAME@production, is served without a restart, and outscores its parent under the new
reward model. The issue's budget: 10 minutes on 2 cores."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean

import httpx
import pytest

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
LOOP = REPO / "docs" / "loop.md"
BUDGET_SECONDS = 600

pytestmark = pytest.mark.slow


def doc_blocks() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", LOOP.read_text(), re.S)
    assert len(blocks) > 5, "docs/loop.md shows no walkthrough"
    return blocks


def environment(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)  # this checkout, from any directory
    env["OMP_NUM_THREADS"] = "1"  # tiny models; spinning threads only stall a shared machine
    return env


def run(script: str, cwd: Path, port: int, timeout: float) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    script = script.replace("--port 8000", f"--port {port}")
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=environment(port), capture_output=True,
        text=True, timeout=timeout,
    )


def test_the_loop_in_docs_runs_and_a_round_serves_a_better_version(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    blocks = doc_blocks()
    started = time.monotonic()
    try:
        done = run("\n".join(blocks[:-1]), tmp_path, port, BUDGET_SECONDS)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{server_log(tmp_path)}"
        elapsed = time.monotonic() - started
        check_the_round(url, tmp_path)
        stop = run(blocks[-1], tmp_path, port, 60)
        assert stop.returncode == 0, stop.stderr
    finally:
        kill_server(tmp_path)
    print(f"docs/loop.md ran in {elapsed:.0f} s")  # noqa: T201 (the measured figure for the docs)
    assert elapsed < BUDGET_SECONDS


def check_the_round(url: str, home: Path) -> None:
    with httpx.Client(base_url=url, timeout=120) as http:
        jobs = http.get("/v1/jobs", params={"use_case": "support"}).json()["data"]
        assert len(jobs) == 1, "the idempotent submit queued one job"
        job = jobs[0]
        assert job["state"] == "succeeded", job
        assert job["attempt"] == 1
        assert job["progress"]["step"] == job["progress"]["total_steps"] == 170
        result = job["result"]
        snapshot = result["snapshot"]
        assert snapshot["rows"] == 200 and len(snapshot["sha256"]) == 64
        assert result["gates_passed"] and result["production_moved"]
        assert result["policy"]["ref"] == "support@2" and result["policy"]["parent_version"] == 1
        assert result["reward_model"]["ref"] == "support-rm@1"

        adapter = http.get("/v1/adapters/support").json()
        assert adapter["aliases"]["production"] == 2
        version = adapter["versions"][-1]
        lineage = version["lineage"]
        assert lineage["job_id"] == job["id"] and lineage["parent_version"] == 1
        assert lineage["data"]["prompts"]["snapshot_id"] == snapshot["id"]
        assert lineage["data"]["prompts"]["sha256"] == snapshot["sha256"]
        assert lineage["reward_adapter"] == "support-rm@1"
        assert version["metrics"]["reward_gain"] >= 1.0

        series = http.get(f"/v1/jobs/{job['id']}/metrics").json()["series"]
        for name in ("reward_model/loss", "reward_model/eval_accuracy", "objective/scores",
                     "objective/kl", "loss/policy_avg", "loss/value_avg", "completions/mean_length"):
            assert series.get(name), f"no {name} series"
        assert [p["step"] for p in series["objective/scores"]] == list(range(151, 171))

        # served by the running server, and better than its parent under the new reward model
        body = {"model": "support@production", "prompt": "Write about the sea:", "max_tokens": 8}
        assert http.post("/v1/completions", json=body).json()["model"] == "support@2"
        prompts = [json.loads(line)["prompt"] for line in
                   (home / "loraloop-loop/data/prompts.jsonl").read_text().splitlines()[:16]]
        scores = {1: [], 2: []}
        for version_number, values in scores.items():
            for seed, prompt in enumerate(prompts):
                completion = http.post("/v1/completions", json={
                    "model": f"support@{version_number}", "prompt": prompt, "max_tokens": 8,
                    "seed": seed}).json()["choices"][0]["text"]
                reward = http.post("/v1/rewards", json={
                    "model": "support-rm@production", "prompt": prompt,
                    "completions": [completion]}).json()
                values.append(reward["data"][0]["score"])
        assert mean(scores[2]) > mean(scores[1]), scores


def server_log(home: Path) -> str:
    path = home / "loraloop-loop" / "server.log"
    worker = home / "loraloop-loop" / "worker" / "worker.log"
    return "\n".join(p.read_text()[-5000:] for p in (path, worker) if p.exists())


def kill_server(home: Path) -> None:
    pid_file = home / "loraloop-loop" / "server.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
