"""A real loraloop server per test module: uvicorn on a free loopback port, in a thread of the
test process, with two registered adapters (``summarize`` rank 4, ``support`` rank 8) and a
reward adapter ``judge``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from core.base.folders import base_model_info
from core.registry import open_registry
from core.settings import Settings
from service.app import create_app
from tests.adapters import make_adapter

ADMIN_KEY = "admin-key-0123456789"
INFER_KEY = "infer-key-0123456789"
FEEDBACK_KEY = "feedback-key-0123456789"
API_KEYS = [
    {"name": "ops", "key": ADMIN_KEY, "scopes": ["admin"]},
    {"name": "app", "key": INFER_KEY, "scopes": ["infer"]},
    {"name": "labelers", "key": FEEDBACK_KEY, "scopes": ["feedback"]},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Run the app under uvicorn on 127.0.0.1 until the block ends; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def publish_test_adapters(settings: Settings, tmp: Path) -> None:
    registry = open_registry(settings, base_model_info(settings))
    base = Path(settings.base_model)
    for name, rank, targets, seed in (
        ("summarize", 4, ("q_proj", "v_proj"), 1),
        ("support", 8, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), 2),
    ):
        manifest = registry.publish(make_adapter(base, tmp / name, rank=rank, target_modules=targets, seed=seed), name)
        registry.set_alias(name, "production", manifest.version)
    judge = registry.publish(make_adapter(base, tmp / "judge", kind="reward", seed=3), "judge", "reward")
    registry.set_alias("judge", "production", judge.version)


@pytest.fixture(scope="module")
def server_settings(tmp_path_factory, tiny_llama_dir) -> Settings:
    data = tmp_path_factory.mktemp("server")
    settings = Settings(
        data_dir=data / "data", base_model=str(tiny_llama_dir), base_model_id="tiny-llama",
        device="cpu", dtype="float32", alias_poll_seconds=0, max_new_tokens=4000,
        api_keys=API_KEYS, start_worker=False,
    )
    publish_test_adapters(settings, data)
    return settings


@pytest.fixture(scope="module")
def base_url(server_settings: Settings) -> Iterator[str]:
    with serve(server_settings) as url:
        yield url


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers=auth(ADMIN_KEY), timeout=60) as c:
        yield c


@pytest.fixture
def wait_for() -> Callable[[Callable[[], bool], float], None]:
    def wait(condition: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            time.sleep(0.05)

    return wait
