"""The HTTP tests run against the module's real server (``base_url``, tests/fixtures/http_server.py):
clients with the admin and the feedback key, the OpenAI SDK with the infer key, and a wait for a
condition the server reaches in its own time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from tests.api_keys import ADMIN_KEY, FEEDBACK_KEY, INFER_KEY, auth


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers=auth(ADMIN_KEY), timeout=60) as c:
        yield c


@pytest.fixture
def labeler(base_url: str) -> Iterator[httpx.Client]:
    """A client with the feedback key."""
    with httpx.Client(base_url=base_url, headers=auth(FEEDBACK_KEY), timeout=60) as c:
        yield c


@pytest.fixture
def oai(base_url: str) -> openai.OpenAI:
    """The official OpenAI SDK with the infer key, retries off (a test sees every answer)."""
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=INFER_KEY, max_retries=0, timeout=60)


@pytest.fixture
def wait_for() -> Callable[[Callable[[], bool], float], None]:
    def wait(condition: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            time.sleep(0.05)

    return wait
