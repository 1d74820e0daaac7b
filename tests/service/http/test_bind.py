"""An open (keyless) API never listens beyond loopback unless explicitly allowed."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from service.app import create_app
from service.auth import check_bind
from tests.api_keys import API_KEYS


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_keyless_on_loopback_starts(host):
    check_bind(Settings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "my-host.example"])
def test_keyless_beyond_loopback_refuses_to_start(host):
    with pytest.raises(SystemExit, match="LORALOOP_API_KEYS"):
        check_bind(Settings(host=host))


def test_keys_or_an_explicit_opt_in_allow_other_addresses():
    check_bind(Settings(host="0.0.0.0", api_keys=API_KEYS))
    check_bind(Settings(host="0.0.0.0", allow_open_access=True))


def test_short_keys_are_refused():
    with pytest.raises(ValueError, match="16 characters"):
        Settings(api_keys=[{"name": "x", "key": "short", "scopes": ["infer"]}])


def _status_from(settings: Settings, client_host: str) -> int:
    """The status of an inference call made from ``client_host``, whatever server runs the app
    (the ASGI scope's peer address is all the app sees of the connection)."""
    with TestClient(create_app(settings), client=(client_host, 50000)) as http:
        body = {"model": "base", "prompt": "hi", "max_tokens": 1}
        response = http.post("/v1/completions", json=body)
        if response.status_code == 403:
            assert "LORALOOP_API_KEYS" in response.json()["error"]["message"]
        return response.status_code


def test_an_open_app_refuses_clients_beyond_loopback_whatever_server_runs_it(settings):
    # `uvicorn --factory service.app:create_app --host 0.0.0.0` never calls check_bind: the app
    # itself must refuse network peers when no keys are configured.
    assert _status_from(settings, "192.0.2.10") == 403
    assert _status_from(settings, "127.0.0.1") == 200


def test_an_explicitly_open_app_answers_every_client(settings):
    opened = settings.model_copy(update={"allow_open_access": True})
    assert _status_from(opened, "192.0.2.10") == 200
