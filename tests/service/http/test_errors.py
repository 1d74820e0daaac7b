"""One error shape for everything, with the status a caller can act on."""

from __future__ import annotations

import pytest

from tests.api_keys import FEEDBACK_KEY, INFER_KEY, auth
from tests.http_errors import assert_error


def test_auth_missing_wrong_and_insufficient(client, base_url):
    import httpx

    with httpx.Client(base_url=base_url) as anonymous:
        r = anonymous.post("/v1/completions", json={"model": "base", "prompt": "x"})
        assert_error(r, 401, "authentication_error", contains="Authorization: Bearer")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_error(anonymous.get("/v1/models", headers=auth("x" * 20)), 401, "authentication_error")
        r = anonymous.post("/v1/completions", json={"model": "base", "prompt": "x"}, headers=auth(FEEDBACK_KEY))
        assert_error(r, 403, "permission_error", contains="'infer' scope")
        r = anonymous.put("/v1/adapters/summarize/aliases/candidate", json={"version": 1}, headers=auth(INFER_KEY))
        assert_error(r, 403, "permission_error", contains="'admin' scope")
        assert anonymous.get("/healthz").status_code == 200  # probes need no key


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "base", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "base", "prompt": "x", "top_p": 0}, "top_p"),
        ({"model": "base", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "base", "prompt": ""}, "prompt"),
        ({"model": "base", "prompt": ["a", [1, 2]]}, "prompt"),
        ({"model": "base", "prompt": "x", "presence_penalty": 2.5}, "presence_penalty"),
        ({"model": "base", "prompt": "x", "unknown_field": 1}, "unknown_field"),
        ({"prompt": "x"}, "model"),
    ],
)
def test_invalid_parameters_are_400_naming_the_field(client, body, param):
    assert_error(client.post("/v1/completions", json=body), 400, "invalid_request_error", param=param)


def test_malformed_json_is_400(client):
    r = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_request_error")


def test_limits_on_prompt_and_new_tokens(client, server_settings):
    long_prompt = "hello " * (server_settings.max_prompt_tokens + 10)
    r = client.post("/v1/completions", json={"model": "base", "prompt": long_prompt})
    assert_error(r, 400, "invalid_request_error", param="prompt", contains="limit")
    r = client.post("/v1/completions", json={"model": "base", "prompt": "x", "max_tokens": 100000})
    assert_error(r, 400, "invalid_request_error", param="max_tokens", contains="limit")


@pytest.mark.parametrize("model", ["../etc", "a/b", "UPPER", "x" * 100, "summarize@0", "summarize@Prod"])
def test_bad_model_references_are_400(client, model):
    assert_error(client.post("/v1/completions", json={"model": model, "prompt": "x"}), 400, "invalid_request_error")


def test_unknown_adapter_version_and_alias_are_404(client):
    for model in ("missing", "summarize@9", "summarize@staging"):
        assert_error(client.post("/v1/completions", json={"model": model, "prompt": "x"}), 404, "not_found_error")


def test_unknown_routes_use_the_same_shape(client):
    assert_error(client.get("/v1/nothing-here"), 404, "not_found_error")


def test_an_unreadable_form_is_an_invalid_request(client):
    # FastAPI raises its own 400 for a multipart body it cannot parse: the caller's fault.
    r = client.post("/v1/feedback/import?use_case=summarize", content=b"--x\r\nnot a form",
                    headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert_error(r, 400, "invalid_request_error")
