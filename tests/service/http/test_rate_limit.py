"""The per-caller rate limit as a client sees it: a 429 in the API's error shape with a
Retry-After in seconds, per API key, or per client address when the server has no keys."""

from __future__ import annotations

import time

import httpx
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from service.app import create_app
from tests.api_keys import ADMIN_KEY, INFER_KEY, auth
from tests.http_errors import assert_error

RATE = 0.5  # a token every 2 s
BURST = 3


@pytest.fixture(scope="module")
def server_settings(server_settings: Settings) -> Settings:
    return server_settings.model_copy(
        update={"rate_limit_per_second": RATE, "rate_limit_burst": BURST}
    )


def test_a_key_over_its_rate_gets_429_with_retry_after(base_url) -> None:
    with httpx.Client(base_url=base_url, headers=auth(ADMIN_KEY), timeout=60) as ops:
        for _ in range(BURST):
            assert ops.get("/v1/models").status_code == 200
        r = ops.get("/v1/models")
        assert_error(r, 429, "rate_limit_error", None, "rate limit of API key 'ops' exceeded")
        assert r.json()["error"]["code"] == "rate_limited"
        assert r.headers["retry-after"] == "2"
        # Another key has its own bucket; probes and metrics are not limited.
        with httpx.Client(base_url=base_url, headers=auth(INFER_KEY), timeout=60) as app:
            assert app.get("/v1/models").status_code == 200
        for _ in range(2 * BURST):
            assert ops.get("/healthz").status_code == 200
        time.sleep(int(r.headers["retry-after"]))
        assert ops.get("/v1/models").status_code == 200  # a token came back, as announced


def test_without_keys_each_client_address_has_its_own_bucket(tmp_path, tiny_llama_dir) -> None:
    settings = Settings(
        data_dir=tmp_path, base_model=str(tiny_llama_dir), device="cpu", dtype="float32",
        start_worker=False, demo_adapter=False, rate_limit_per_second=RATE, rate_limit_burst=BURST,
    )
    app = create_app(settings)
    with TestClient(app, client=("127.0.0.1", 50000)) as first:
        second = TestClient(app, client=("127.0.0.2", 50000))
        for _ in range(BURST):
            assert first.get("/v1/models").status_code == 200
        assert_error(first.get("/v1/models"), 429, "rate_limit_error", None, "client 127.0.0.1")
        assert second.get("/v1/models").status_code == 200
