"""The SDK and CLI against a real server: the module's server (``base_url``,
tests/fixtures/http_server.py) and this worktree's clients/python first on sys.path
(tests/clients/client_src.py). A module that runs jobs overrides ``server_settings`` with
tests/jobs.py's ``with_worker``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

import tests.clients.client_src  # noqa: F401 (before any import of loraloop_client)
from tests.api_keys import ADMIN_KEY

if TYPE_CHECKING:
    from loraloop_client import Client


@pytest.fixture(autouse=True)
def _no_loraloop_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pass the server and key explicitly unless they set the variables themselves."""
    monkeypatch.delenv("LORALOOP_BASE_URL", raising=False)
    monkeypatch.delenv("LORALOOP_API_KEY", raising=False)


@pytest.fixture
def sdk(base_url: str) -> Iterator[Client]:
    from loraloop_client import Client  # from CLIENT_SRC (tests/clients/client_src.py)

    with Client(base_url, ADMIN_KEY, timeout=60) as client:
        yield client
