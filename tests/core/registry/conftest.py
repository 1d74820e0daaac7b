"""A registry per test on each backend: a local folder, and a fresh bucket on SeaweedFS.
(The adapter folders to publish, ``adapter_dir`` and the like, are tests/fixtures/adapters.py's.)"""

from __future__ import annotations

import pytest

from core.base.info import BaseModelInfo
from core.registry import Registry, open_registry
from core.settings import Settings
from tests.settings_variants import s3_settings


@pytest.fixture(params=["local", "s3"])
def registry_settings(request, settings: Settings) -> Settings:
    if request.param == "local":
        return settings
    server = request.getfixturevalue("seaweedfs")
    return s3_settings(settings, server, request.getfixturevalue("s3_bucket"))


@pytest.fixture
def registry(registry_settings: Settings, base_info: BaseModelInfo) -> Registry:
    return open_registry(registry_settings, base_info)


@pytest.fixture
def three_versions(registry: Registry, new_adapter) -> Registry:
    """The registry holding versions 1, 2 and 3 of ``summarize`` (no aliases)."""
    for seed in range(3):
        registry.publish(new_adapter(seed=seed), "summarize")
    return registry
