"""X-Request-ID through the HTTP API: a caller's safe id is kept, anything else is replaced by
a new one, and every response carries it, errors included."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.logs import RequestIdFilter
from tests.api_keys import ADMIN_KEY, auth

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("given", [
    "0f8fad5b-d9cb-469f-a165-70867728950e",  # a UUID
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a W3C traceparent
    "retry.2:job_7",
    "x" * 128,
])
def test_a_safe_id_from_the_caller_is_answered_back(client, given):
    response = client.get("/v1/models", headers={"X-Request-ID": given})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize("given", [
    "x" * 129,  # too long
    "",
    "two words",
    "id;drop",
    '"quoted"',
    "évite",
    "a\tb",
])
def test_an_unsafe_or_overlong_id_is_replaced_by_a_new_one(client, given):
    response = client.get("/v1/models", headers={"X-Request-ID": given.encode("utf-8")})
    assert response.status_code == 200
    assert GENERATED.fullmatch(response.headers["x-request-id"])


def test_without_an_id_each_request_gets_a_new_one(client):
    ids = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(GENERATED.fullmatch(i) for i in ids)


def test_errors_carry_the_id_too(client, base_url):
    missing = client.post("/v1/completions", json={"model": "nope", "prompt": "x"},
                          headers={"X-Request-ID": "req-404"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "req-404"
    invalid = client.post("/v1/completions", json={"model": "base"}, headers={"X-Request-ID": "req-400"})
    assert invalid.status_code == 400 and invalid.headers["x-request-id"] == "req-400"
    with httpx.Client(base_url=base_url) as anonymous:
        denied = anonymous.get("/v1/models", headers={"X-Request-ID": "req-401"})
    assert denied.status_code == 401 and denied.headers["x-request-id"] == "req-401"
    unknown = client.get("/no/such/route", headers={"X-Request-ID": "req-404b"})
    assert unknown.headers["x-request-id"] == "req-404b"


def test_an_unexpected_error_answers_500_with_the_id_and_logs_it(server_settings, caplog):
    """Starlette answers an unhandled exception outside every middleware: the id must still be
    in the 500 and on its log line."""
    app = create_app(server_settings)

    @app.get("/test-only/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    caplog.handler.addFilter(RequestIdFilter(missing=None))
    with TestClient(app, raise_server_exceptions=False) as http, caplog.at_level(logging.ERROR):
        response = http.get("/test-only/boom", headers={**auth(ADMIN_KEY), "X-Request-ID": "req-500"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "req-500"
    (record,) = [r for r in caplog.records if r.getMessage() == "unexpected error"]
    assert record.request_id == "req-500"
