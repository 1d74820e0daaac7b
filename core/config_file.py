"""The one reader of configuration files: TOML, YAML or JSON, by the file's suffix.

Used for the settings file (``LORALOOP_CONFIG``) and for training run configs (``--config``).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import yaml

SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping a config file holds; ValueError says what is wrong with the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    if path.suffix not in SUFFIXES:
        raise ValueError(f"config file {path}: use .toml, .yaml, .yml or .json")
    text = path.read_text()
    values: object
    try:
        if path.suffix == ".toml":
            values = tomllib.loads(text)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            values = yaml.safe_load(text) or {}
    except (ValueError, yaml.YAMLError) as e:  # TOML and JSON errors are ValueErrors
        raise ValueError(f"config file {path} cannot be parsed: {e}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of setting names to values")
    return values
