"""The HTTP tests run against the module's real server (``base_url``, tests/fixtures/http_server.py):
a client with the admin key, and a wait for a condition the server reaches in its own time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.api_keys import ADMIN_KEY, auth


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
