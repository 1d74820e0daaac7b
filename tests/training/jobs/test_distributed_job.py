"""``torchrun --standalone --nproc-per-node 2 -m training run-job ID`` (what the Kubernetes
runner starts), DDP over gloo on the CPU: rank 0 alone claims the job, reports and publishes,
the other rank joins the training; a job nobody may run ends every rank at once; a cancelled
job ends the whole torchrun instead of leaving the other rank waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.base.folders import base_model_info
from core.registry import open_registry
from core.settings import Settings
from core.store import FeedbackCreate, Job, JobState, Store
from training.synthetic import make_preference_rows

TINY = {"batch_size": 4, "target_sequence_length": 4, "prompt_sequence_length": 16,
        "lora_rank": 2, "eval_fraction": 0.25}


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.from_settings(settings) as opened:
        for row in make_preference_rows(24, seed=5):
            opened.feedback.add(FeedbackCreate(
                "qa", 0, prompt=row["prompt"], candidates=(row["chosen"], row["rejected"])))
        yield opened


def torchrun_job(job: Job, settings: Settings, output: Path) -> subprocess.Popen[bytes]:
    """torchrun in its own process group (killed whole if a test times out), output to a file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    env |= {
        "LORALOOP_DATA_DIR": str(settings.data_dir),
        "LORALOOP_BASE_MODEL": settings.base_model,
        "LORALOOP_BASE_MODEL_ID": "tiny-llama",
        "LORALOOP_DEVICE": "cpu",
        "LORALOOP_JOB_HEARTBEAT_SECONDS": "0.5",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "training", "run-job", job.id]
    with output.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def finish(process: subprocess.Popen[bytes], output: Path, timeout: float = 600) -> tuple[int, str]:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and both ranks
        process.wait()
        raise AssertionError(f"torchrun did not end in {timeout} s:\n{output.read_text()[-4000:]}") from None
    return code, output.read_text()


@pytest.mark.slow
def test_rank_0_alone_claims_reports_and_publishes_a_round_both_ranks_train(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    params = {"algorithm": "dpo", "reward_model": dict(TINY, train_steps=4),
              "policy": dict(TINY, train_steps=2, max_eval_prompts=2)}
    job = store.jobs.create("round", "qa", params)
    log = tmp_path / "torchrun.log"
    code, output = finish(torchrun_job(job, settings, log), log)
    done = store.jobs.get(job.id)
    assert code == 0 and done.state == JobState.SUCCEEDED, (done.error, output[-4000:])
    assert done.attempts == 1  # one claim: rank 1 never claimed it

    # Progress, metrics and logs came from one process: each step of a series once, one start.
    points = Counter((p.name, p.step) for p in store.jobs.metrics(job.id))
    assert points and max(points.values()) == 1
    assert store.job_queries.progress(job.id).step == 6
    lines = [line.line for line in store.jobs.logs(job.id)]
    assert sum("attempt 1 started" in line for line in lines) == 1

    # Rank 0 published once; both versions were trained by the two processes together.
    registry = open_registry(settings, base_model_info(settings))
    for adapter in ("qa-rm", "qa"):
        assert registry.list_versions(adapter) == [1]
        assert registry.manifest(adapter, 1).lineage["world_size"] == 2
    assert "process 1 of 2" in output  # rank 1 joined the training


@pytest.mark.slow
def test_a_job_already_finished_ends_every_rank_at_once(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    job = store.jobs.create("dpo", "qa", dict(TINY, train_steps=2))
    store.jobs.request_cancel(job.id)  # a queued job ends cancelled at once
    log = tmp_path / "torchrun.log"
    code, output = finish(torchrun_job(job, settings, log), log, timeout=300)
    assert code == 0, output[-4000:]
    assert store.jobs.get(job.id).state == JobState.CANCELLED


@pytest.mark.slow
def test_a_cancel_ends_the_whole_torchrun_and_registers_nothing(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    job = store.jobs.create("dpo", "qa", dict(TINY, train_steps=5000))
    log = tmp_path / "torchrun.log"
    process = torchrun_job(job, settings, log)
    deadline = time.monotonic() + 300
    while (store.job_queries.progress(job.id).step or 0) < 2:
        if process.poll() is not None or time.monotonic() > deadline:
            finish(process, log, timeout=1)
            raise AssertionError(f"training did not start:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    store.jobs.request_cancel(job.id)
    # Rank 0 stops at its next step; rank 1, waiting on it in a collective, fails and torchrun
    # ends (not exit 0: a rank left mid-training) instead of waiting for the gloo timeout.
    code, output = finish(process, log, timeout=120)
    assert store.jobs.get(job.id).state == JobState.CANCELLED, output[-4000:]
    assert "process 1 leaves job" in output
    registry = open_registry(settings, base_model_info(settings))
    assert "qa" not in registry.list_adapters()
