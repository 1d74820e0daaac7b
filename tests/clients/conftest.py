"""The SDK and CLI against a real server: the HTTP tests' server fixtures (uvicorn in a
thread, the tiny Llama, adapters ``summarize``, ``support`` and the reward adapter ``judge``),
and this worktree's clients/python first on sys.path (an editable install may point elsewhere).
A module that runs jobs overrides ``server_settings`` with :func:`with_worker`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings

CLIENT_SRC = Path(__file__).resolve().parents[2] / "clients" / "python"
sys.path.insert(0, str(CLIENT_SRC))

from loraloop_client import Client  # noqa: E402

from tests.service.http.conftest import (  # noqa: E402, F401 (fixtures)
    ADMIN_KEY,
    base_url,
    server_settings,
)


def with_worker(settings: Settings) -> Settings:
    """The settings of a server that starts its local job worker, polling often so that a
    tiny job ends in seconds."""
    return settings.model_copy(update={
        "start_worker": True, "worker_poll_seconds": 0.2, "job_heartbeat_seconds": 0.5,
        "job_heartbeat_timeout_seconds": 30.0, "job_cancel_grace_seconds": 5.0,
    })


@pytest.fixture(autouse=True)
def _no_loraloop_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pass the server and key explicitly unless they set the variables themselves."""
    monkeypatch.delenv("LORALOOP_BASE_URL", raising=False)
    monkeypatch.delenv("LORALOOP_API_KEY", raising=False)


@pytest.fixture
def sdk(base_url: str) -> Iterator[Client]:  # noqa: F811 (the imported fixture)
    with Client(base_url, ADMIN_KEY, timeout=60) as client:
        yield client
