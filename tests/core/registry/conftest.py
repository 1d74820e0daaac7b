"""A registry per test on each backend: a local folder, and a fresh bucket on SeaweedFS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core.base.info import BaseModelInfo
from core.registry import Registry, open_registry
from core.settings import Settings
from tests.adapters import make_adapter
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
def adapter_dir(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    return make_adapter(tiny_llama_dir, tmp_path / "adapter", rank=4)


@pytest.fixture
def reward_dir(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    return make_adapter(tiny_llama_dir, tmp_path / "reward", kind="reward")


@pytest.fixture
def new_adapter(tmp_path: Path, tiny_llama_dir: Path) -> Callable[..., Path]:
    """Make another adapter folder: new_adapter(seed=1, rank=8, ...)."""
    counter = iter(range(1000))

    def make(**kwargs) -> Path:
        return make_adapter(tiny_llama_dir, tmp_path / f"adapter-{next(counter)}", **kwargs)

    return make
