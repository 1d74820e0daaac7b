"""A real server for the pages: two versions of ``summarize`` (production @1, candidate @2),
an admin key and two labelers' keys (tests/service/ui/helpers.py), a fixed session secret (so
sides are deterministic)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.base.folders import base_model_info
from core.registry import open_registry
from core.settings import Settings
from core.store import Store
from tests.adapters import make_adapter, publish_test_adapters
from tests.api_keys import auth
from tests.service.ui.helpers import ADMIN_KEY, API_KEYS
from tests.service_thread import serve


@pytest.fixture(scope="module")
def ui_settings(tmp_path_factory, tiny_llama_dir) -> Settings:
    data = tmp_path_factory.mktemp("ui-server")
    settings = Settings(
        data_dir=data / "data", base_model=str(tiny_llama_dir), base_model_id="tiny-llama",
        device="cpu", dtype="float32", alias_poll_seconds=0, api_keys=API_KEYS,
        ui_session_secret="a-fixed-secret-for-stable-sides",
    )
    publish_test_adapters(settings, data)
    registry = open_registry(settings, base_model_info(settings))
    second = registry.publish(make_adapter(Path(settings.base_model), data / "summarize-2", seed=7), "summarize")
    registry.set_alias("summarize", "candidate", second.version)
    return settings


@pytest.fixture(scope="module")
def ui_url(ui_settings: Settings) -> Iterator[str]:
    with serve(ui_settings) as url:
        yield url


@pytest.fixture
def store(ui_settings: Settings) -> Iterator[Store]:
    """The server's own store, opened beside it (jobs are written by runners the same way)."""
    with Store.from_settings(ui_settings) as opened:
        yield opened


@pytest.fixture
def admin(ui_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ui_url, headers=auth(ADMIN_KEY), timeout=120) as c:
        yield c
