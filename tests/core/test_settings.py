"""Settings: environment, config file, derived paths, and secrets kept out of output."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Settings


def test_defaults_derive_every_path_from_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LORALOOP_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.base_model == "smollm2-135m-instruct"
    assert settings.registry_url == str(tmp_path / "registry")
    assert settings.cache_dir == tmp_path / "cache"
    assert settings.database_url == f"sqlite:///{tmp_path / 'loraloop.db'}"


def test_environment_wins_over_the_config_file(tmp_path, monkeypatch):
    config = tmp_path / "loraloop.toml"
    config.write_text('registry_url = "s3://bucket/prefix"\nmax_batch_size = 8\ndtype = "bfloat16"\n')
    monkeypatch.setenv("LORALOOP_CONFIG", str(config))
    monkeypatch.setenv("LORALOOP_MAX_BATCH_SIZE", "16")
    settings = Settings()
    assert settings.registry_url == "s3://bucket/prefix"
    assert settings.dtype == "bfloat16"
    assert settings.max_batch_size == 16


def test_yaml_config_files_work_too(tmp_path, monkeypatch):
    config = tmp_path / "loraloop.yaml"
    config.write_text("device: cuda\nmax_queue: 3\n")
    monkeypatch.setenv("LORALOOP_CONFIG", str(config))
    assert (Settings().device, Settings().max_queue) == ("cuda", 3)


def test_max_host_adapters_is_read_under_its_new_and_its_old_name(tmp_path, monkeypatch):
    assert Settings(max_host_adapters=3).max_host_adapters == 3
    monkeypatch.setenv("LORALOOP_MAX_CPU_ADAPTERS", "7")  # the name before the tiers had names
    assert Settings().max_host_adapters == 7
    monkeypatch.setenv("LORALOOP_MAX_HOST_ADAPTERS", "9")  # the new name wins
    assert Settings().max_host_adapters == 9
    monkeypatch.delenv("LORALOOP_MAX_CPU_ADAPTERS")
    monkeypatch.delenv("LORALOOP_MAX_HOST_ADAPTERS")
    config = tmp_path / "loraloop.toml"
    config.write_text("max_host_adapters = 5\n")
    monkeypatch.setenv("LORALOOP_CONFIG", str(config))
    assert Settings().max_host_adapters == 5
    monkeypatch.setenv("LORALOOP_MAX_CPU_ADAPTERS", "0")
    with pytest.raises(ValidationError, match="max_host_adapters|MAX_CPU_ADAPTERS"):
        Settings()


def test_unknown_keys_and_bad_values_are_refused(tmp_path, monkeypatch):
    config = tmp_path / "loraloop.toml"
    config.write_text("max_bach_size = 8\n")
    monkeypatch.setenv("LORALOOP_CONFIG", str(config))
    with pytest.raises(ValidationError, match="max_bach_size"):
        Settings()
    monkeypatch.delenv("LORALOOP_CONFIG")
    monkeypatch.setenv("LORALOOP_DTYPE", "float8")
    with pytest.raises(ValidationError, match="dtype"):
        Settings()


def test_a_missing_config_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("LORALOOP_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ValueError, match="absent.toml"):
        Settings()


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path, monkeypatch):
    config = tmp_path / "loraloop.yaml"
    config.write_text("- device: cuda\n")
    monkeypatch.setenv("LORALOOP_CONFIG", str(config))
    with pytest.raises(ValueError, match="must hold a mapping"):
        Settings()


def test_the_s3_secret_never_shows_in_output(monkeypatch):
    monkeypatch.setenv("LORALOOP_S3_SECRET_ACCESS_KEY", "hunter2-secret")
    settings = Settings()
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings.model_dump())
    assert settings.s3_secret_access_key.get_secret_value() == "hunter2-secret"


def test_kubernetes_runner_settings_read_nested_environment_variables(monkeypatch):
    monkeypatch.setenv("LORALOOP_KUBERNETES__NAMESPACE", "training")
    monkeypatch.setenv("LORALOOP_KUBERNETES__RESOURCES__LIMITS", '{"nvidia.com/gpu": 8}')
    monkeypatch.setenv("LORALOOP_KUBERNETES__KUEUE_QUEUE", "team-a")
    kubernetes = Settings().kubernetes
    assert kubernetes.namespace == "training"
    assert kubernetes.resources.limits == {"nvidia.com/gpu": 8}
    assert kubernetes.kueue_queue == "team-a"
    assert kubernetes.image is None  # the rest keep their defaults


def test_kubernetes_runner_settings_come_from_the_config_file_and_refuse_unknown_keys(
    tmp_path, monkeypatch
):
    config = tmp_path / "loraloop.yaml"
    config.write_text("kubernetes:\n  image: loraloop:1.0\n  nodes: 4\n")
    monkeypatch.setenv("LORALOOP_CONFIG", str(config))
    assert (Settings().kubernetes.image, Settings().kubernetes.nodes) == ("loraloop:1.0", 4)
    config.write_text("kubernetes:\n  namespac: x\n")
    with pytest.raises(ValidationError, match="namespac"):
        Settings()
