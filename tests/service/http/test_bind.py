"""An open (keyless) API never listens beyond loopback unless explicitly allowed."""

from __future__ import annotations

import pytest

from core.settings import Settings
from service.auth import check_bind
from tests.service.http.conftest import API_KEYS


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
