"""Typed run configurations with the knobs of Vertex AI's RLHF pipeline.

A run is configured by a YAML, TOML or JSON file, by command-line flags, or both (flags win).
Every field is a flag of the same name (``learning_rate`` -> ``--learning-rate``); gates are a
``gates:`` table in the file or ``--gate NAME=VALUE`` flags. Invalid values raise ValueError
with a message saying what to change.

Vertex pipeline parameter           here
  reward_model_train_steps          reward: train_steps
  reinforcement_learning_train_steps  ppo: train_steps
  *_learning_rate_multiplier        learning_rate (absolute, not a multiplier)
  kl_coeff                          kl_coeff (+ adaptive_kl, kl_target, kl_horizon)
  instruction                       instruction
  prompt_sequence_length            prompt_sequence_length
  target_sequence_length            target_sequence_length
  reward_lora_dim / policy_lora_dim lora_rank (+ lora_alpha, lora_dropout, target_modules)
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

from core.config_file import read_config_file

# The dataclasses live in core so the jobs API can validate overrides without importing training.
from core.training_config import (  # noqa: F401 (re-exported)
    C,
    ConfigError,
    DPOConfig,
    Gates,
    PolicyConfig,
    PPOConfig,
    RewardConfig,
    TrainConfig,
    build_config,
    is_folder_ref,
    knob,
)

# --- files and flags -----------------------------------------------------------------------


def load_config(cls: type[C], file: str | Path | None = None, **overrides: Any) -> C:
    """Values from ``file`` (if any), then ``overrides`` (flags), validated into ``cls``."""
    values = read_config_file(file) if file else {}
    gates = dict(values.get("gates") or {})
    gates.update(overrides.pop("gates", None) or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    if gates:
        values["gates"] = gates
    return build_config(cls, values)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[TrainConfig]) -> None:
    """One flag per config field; absent flags stay absent so file values are kept."""
    parser.add_argument("--config", help="YAML, TOML or JSON file with these settings")
    parser.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"promotion gate, repeatable: {', '.join(f.name for f in dataclasses.fields(Gates))}",
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "gates":
            continue
        hint = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f.metadata.get("help", ""),
        }
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            hint = next(a for a in args if a is not type(None))
            origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is list:
            kwargs["type"] = lambda s: [m.strip() for m in s.split(",") if m.strip()]
            kwargs["metavar"] = "A,B,..."
        elif origin is Literal:
            kwargs["choices"] = list(args)
        else:
            kwargs["type"] = hint
        if f.default is not dataclasses.MISSING and f.default not in (None, ""):
            kwargs["help"] += f" (default {f.default})"
        parser.add_argument(flag, **kwargs)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    gates: dict[str, float] = {}
    for item in args.gate or []:
        name, sep, value = item.partition("=")
        try:
            gates[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--gate {item!r}: write NAME=NUMBER, e.g. --gate max_kl=5")
    return load_config(cls, args.config, gates=gates, **overrides)


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """JSON-ready settings, for lineage."""
    return dataclasses.asdict(config)
