"""The one config-file reader (the settings file; training's --config, tests/training/test_config.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from core.config_file import read_config_file
from core.settings import Settings

VALUES = {"adapter": "qa-rm", "train_steps": 10, "gates": {"min_reward_accuracy": 0.9}}


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".yml", ".json"])
def test_every_format_reads_the_same_mapping(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"run{suffix}"
    if suffix == ".toml":
        path.write_text('adapter = "qa-rm"\ntrain_steps = 10\n[gates]\nmin_reward_accuracy = 0.9\n')
    elif suffix == ".json":
        path.write_text(json.dumps(VALUES))
    else:
        path.write_text(yaml.safe_dump(VALUES))
    assert read_config_file(path) == VALUES


BAD_FILES = {
    "an unknown suffix": ("run.ini", "x = 1\n", "use .toml, .yaml, .yml or .json"),
    "not a mapping": ("run.yaml", "- 1\n", "must hold a mapping"),
    "broken TOML": ("run.toml", "x = \n", "cannot be parsed"),
    "broken YAML": ("run.yaml", "a: [1\n", "cannot be parsed"),
    "broken JSON": ("run.json", "{", "cannot be parsed"),
}


@pytest.mark.parametrize("name, text, reason", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_refused_with_its_reason_also_as_the_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str, reason: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as direct:
        read_config_file(path)
    assert reason in str(direct.value) and str(path) in str(direct.value)
    monkeypatch.setenv("LORALOOP_CONFIG", str(path))
    with pytest.raises(ValueError) as settings:
        Settings()
    assert f"LORALOOP_CONFIG: {direct.value}" in str(settings.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absent.toml does not exist"):
        read_config_file(tmp_path / "absent.toml")
