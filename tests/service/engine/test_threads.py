"""Only the engine thread keeps an OpenMP team (service/engine/threads.py): start-up and adapter
reads run on threads that end with their work."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from service.engine.threads import OwnThreadExecutor, on_own_thread


def test_on_own_thread_returns_from_a_thread_that_has_ended():
    ran_on: list[threading.Thread] = []

    def work() -> int:
        ran_on.append(threading.current_thread())
        return 42

    assert on_own_thread(work, "t") == 42
    assert ran_on[0] is not threading.current_thread()
    assert not ran_on[0].is_alive()


def test_on_own_thread_raises_the_calls_exception():
    def fail() -> None:
        raise ValueError("broken checkpoint")

    with pytest.raises(ValueError, match="broken checkpoint"):
        on_own_thread(fail, "t")


def test_each_call_runs_on_a_thread_that_ends_with_it():
    executor = OwnThreadExecutor(max_workers=2, name="t")
    threads = [executor.submit(threading.current_thread).result() for _ in range(3)]
    assert len(set(threads)) == 3  # three Thread objects, none reused
    executor.shutdown(wait=True)
    assert not any(t.is_alive() for t in threads)


def test_at_most_max_workers_calls_run_at_once():
    executor = OwnThreadExecutor(max_workers=2, name="t")
    lock, running, peak = threading.Lock(), [0], [0]

    def work() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    futures = [executor.submit(work) for _ in range(6)]
    for future in futures:
        future.result(timeout=10)
    executor.shutdown()
    assert peak[0] == 2


def test_shutdown_cancels_waiting_calls_and_refuses_new_ones():
    executor = OwnThreadExecutor(max_workers=1, name="t")
    release = threading.Event()
    first = executor.submit(release.wait, 10)
    time.sleep(0.05)  # the first call holds the only turn
    second = executor.submit(lambda: "ran")
    executor.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(lambda: None)
    release.set()
    assert first.result(timeout=10) is True
    assert second.cancelled()
    executor.shutdown(wait=True)


def test_a_calls_exception_reaches_its_future():
    executor = OwnThreadExecutor(max_workers=1, name="t")
    future = executor.submit(int, "not a number")
    with pytest.raises(ValueError):
        future.result(timeout=10)
    executor.shutdown()


# In a fresh interpreter: the pytest process's own threads have run torch ops of every kind.
START_UP = """
import os, sys, threading, time
from pathlib import Path
from core.base.folders import base_model_info
from core.registry import open_registry
from core.settings import Settings
from service.engine import Engine

def native_threads():  # the process's threads that Python did not start: OpenMP workers here
    return {int(t) for t in os.listdir("/proc/self/task")} - {t.native_id for t in threading.enumerate()}

settings = Settings(data_dir=Path(sys.argv[2]), base_model=sys.argv[1], base_model_id="tiny-llama",
                    device="cpu", dtype="float32", alias_poll_seconds=0, start_worker=False)
info = base_model_info(settings)
registry = open_registry(settings, info)
before = native_threads()
engine = Engine(settings, registry, base_info=info)
deadline = time.monotonic() + 10
while native_threads() - before and time.monotonic() < deadline:
    time.sleep(0.05)  # a team whose thread has ended leaves as its workers exit
print(len(native_threads() - before))
print(sys.getswitchinterval())
engine.close()
"""


@pytest.fixture(scope="module")
def started(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """What START_UP printed: the native threads an engine's start-up left, and the GIL's
    switch interval once the engine runs."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")  # no tokenizer thread pool either
    env = {k: v for k, v in env.items() if not k.startswith("LORALOOP_")}
    out = subprocess.run(
        [sys.executable, "-c", START_UP, str(tiny_llama_dir), str(tmp_path_factory.mktemp("start") / "data")],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )
    return out.stdout.strip().splitlines()[-2:]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc (Linux)")
@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one intra-op thread makes no OpenMP team")
def test_start_up_leaves_no_openmp_team_beside_the_engine_thread(started: list[str]):
    # Loading the model and allocating the cache run ops large enough to split; on the
    # constructing thread they would leave its team (a worker thread) for the process's life.
    assert started[0] == "0", started


def test_a_running_engine_lets_the_engine_thread_have_the_gil_back_within_half_a_millisecond(
    started: list[str],
):
    # CPython's default is 5 ms: the event loop's Python would keep the engine (and its
    # OpenMP team) waiting that long.
    assert float(started[1]) <= 0.0005, started
