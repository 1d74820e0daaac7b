"""A request that reaches a closing engine gets 503 with Retry-After: another replica may serve."""

from __future__ import annotations

from fastapi.testclient import TestClient

from core.settings import Settings
from service.app import create_app
from tests.http_errors import assert_error


def test_a_closed_engine_answers_503_with_retry_after(tmp_path, tiny_llama_dir):
    settings = Settings(
        data_dir=tmp_path / "data", base_model=str(tiny_llama_dir), device="cpu", dtype="float32",
        alias_poll_seconds=0, demo_adapter=False,
    )
    app = create_app(settings)
    # An open (keyless) app answers loopback peers only; the test client is not one by default.
    with TestClient(app, client=("127.0.0.1", 50000)) as client:  # runs the lifespan: the engine starts and stops with it
        app.state.services.engine.close()  # as the lifespan does on shutdown
        response = client.post("/v1/completions", json={"model": "base", "prompt": "Hello"})
        assert_error(response, 503, "api_error", contains="shutting down")
        assert int(response.headers["retry-after"]) >= 1
