"""The training configurations' fields, types, bounds and defaults, where both the service and
the training package can reach them: the jobs API validates a job's config overrides against
them at submit time (a 400 naming the field), and ``training`` runs them.

Pure data and validation: no torch, no files. ``training/config.py`` adds config files and
command-line flags on top.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from core.base.info import LLAMA_PROJECTIONS
from core.errors import InvalidName
from core.names import parse_ref, validate_name
from core.text_limits import MAX_PROMPT_CHARS

C = TypeVar("C", bound="TrainConfig")


class ConfigError(ValueError):
    """A config value that cannot be used; ``param`` names the field (``gates.max_kl``)."""

    def __init__(self, message: str, param: str, reason: str | None = None):
        super().__init__(message)
        self.param = param
        self.reason = reason or message  # without the command-line hint


def knob(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A config field with its --help text."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def is_folder_ref(ref: str) -> bool:
    """An adapter given as a local folder (has a path separator) rather than NAME@selector."""
    return "/" in ref or ref.startswith((".", "~")) or Path(ref).is_dir()


def _fail(name: str, message: str) -> ConfigError:
    flag = "--" + name.replace("_", "-")
    return ConfigError(
        f"{name}: {message} (set {flag} or '{name}' in the config file)", name, message
    )


@dataclass(kw_only=True)
class Gates:
    """Promotion gates: each one set must pass before NAME@production moves."""

    min_reward_gain: float | None = knob(None, "held-out mean reward after - before >= this")
    max_kl: float | None = knob(None, "KL(policy || base) per response <= this")
    min_reward_accuracy: float | None = knob(
        None, "reward model's held-out pairwise accuracy >= this"
    )
    min_win_rate: float | None = knob(None, "win rate against the previous version >= this")
    min_margin_gain: float | None = knob(
        None, "DPO: held-out chosen-rejected logprob margin gain >= this"
    )
    # Online comparison: people vote candidate against production on the labeling page. With
    # either set, production moves only once the votes say so (training.gates.promote_on_votes).
    min_human_votes: float | None = knob(
        None, "human votes of candidate against production >= this"
    )
    min_human_win_lower_bound: float | None = knob(
        None, "Wilson 95% lower bound of the candidate's human win rate > this (e.g. 0.5)"
    )

    def __post_init__(self) -> None:
        for name in ("min_reward_accuracy", "min_win_rate", "min_human_win_lower_bound"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"gate {name} is a fraction: use a value in [0, 1], got {value}",
                    f"gates.{name}",
                )
        if self.max_kl is not None and self.max_kl < 0:
            raise ConfigError(f"gate max_kl must be >= 0, got {self.max_kl}", "gates.max_kl")
        if self.min_human_votes is not None and self.min_human_votes < 1:
            raise ConfigError(
                f"gate min_human_votes must be >= 1, got {self.min_human_votes}",
                "gates.min_human_votes",
            )

    def active(self) -> dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(kw_only=True)
class TrainConfig:
    """Knobs shared by every algorithm."""

    adapter: str = knob(help="adapter (use case) name to register, e.g. summarize")
    # data
    eval_fraction: float = knob(0.1, "fraction of the data held out for evaluation")
    instruction: str = knob("", "instruction prefixed to every prompt (Vertex 'instruction')")
    prompt_sequence_length: int = knob(256, "max prompt tokens (longer prompts keep their end)")
    target_sequence_length: int = knob(64, "max completion tokens, EOS included")
    # optimisation
    train_steps: int = knob(100, "optimizer steps (PPO: rollout iterations)")
    learning_rate: float = knob(1e-4, "AdamW learning rate")
    batch_size: int = knob(16, "rows per step, over all processes")
    weight_decay: float = knob(0.0, "AdamW weight decay")
    max_grad_norm: float = knob(1.0, "gradient clipping norm (0 turns it off)")
    seed: int = knob(0, "seed of LoRA init, data order and sampling: same seed, same result")
    # LoRA
    lora_rank: int = knob(8, "LoRA rank r")
    lora_alpha: float = knob(16.0, "LoRA alpha (scale alpha / r)")
    lora_dropout: float = knob(0.0, "dropout on the LoRA input")
    target_modules: list[str] = knob(
        ["q_proj", "k_proj", "v_proj", "o_proj"], "projections to adapt"
    )
    # run
    register: bool = knob(True, "publish the result to the registry")
    promote: bool = knob(False, "move NAME@production when every gate passes")
    gates: Gates = field(default_factory=Gates, metadata={"help": "promotion gates"})
    output_dir: str | None = knob(None, "also keep the adapter folder here")
    metrics_file: str | None = knob(None, "append the metrics series (JSON lines) to this file")
    job_id: str | None = knob(None, "training job id, recorded in lineage")
    created_by: str | None = knob(None, "who registers the version")
    progress: bool = knob(True, "show a progress bar on a terminal")

    def __post_init__(self) -> None:
        if not self.adapter:
            raise _fail("adapter", "an adapter name is required")
        try:
            validate_name(self.adapter)
        except InvalidName as e:
            raise _fail("adapter", str(e)) from None
        positive = (
            "prompt_sequence_length",
            "target_sequence_length",
            "train_steps",
            "batch_size",
            "lora_rank",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise _fail(name, f"must be >= 1, got {getattr(self, name)}")
        if self.target_sequence_length < 2:
            raise _fail("target_sequence_length", "needs room for a token and EOS: use >= 2")
        if not self.learning_rate > 0:
            raise _fail("learning_rate", f"must be > 0, got {self.learning_rate}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise _fail("eval_fraction", f"must be in (0, 1), got {self.eval_fraction}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise _fail("lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        if self.lora_alpha <= 0:
            raise _fail("lora_alpha", f"must be > 0, got {self.lora_alpha}")
        if self.max_grad_norm < 0 or self.weight_decay < 0:
            raise _fail("max_grad_norm", "max_grad_norm and weight_decay must be >= 0")
        unknown = sorted(set(self.target_modules) - set(LLAMA_PROJECTIONS))
        if unknown or not self.target_modules:
            raise _fail(
                "target_modules",
                f"use some of {', '.join(LLAMA_PROJECTIONS)}; got {unknown or 'none'}",
            )
        if len(self.instruction) > MAX_PROMPT_CHARS:  # it is part of every prompt
            raise _fail(
                "instruction",
                f"{len(self.instruction)} characters is over the limit of {MAX_PROMPT_CHARS}",
            )
        if isinstance(self.gates, dict):
            self.gates = Gates(**self.gates)

    @property
    def kind(self) -> Literal["policy", "reward"]:
        return "policy"


@dataclass(kw_only=True)
class RewardConfig(TrainConfig):
    """Reward model: base + LoRA + scalar head, Bradley-Terry loss."""

    data: str = knob(help="preference pairs: JSONL in Vertex or TRL format (.gz ok)")
    margin: float = knob(
        0.0, "constant margin m in -logsigmoid(r_c - r_r - m), added to a row's own margin"
    )
    learning_rate: float = knob(1e-3, "AdamW learning rate")
    train_steps: int = knob(200, "optimizer steps (Vertex reward_model_train_steps)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise _fail("data", "a preference data file is required")

    @property
    def kind(self) -> Literal["policy", "reward"]:
        return "reward"


@dataclass(kw_only=True)
class PolicyConfig(TrainConfig):
    """What PPO and DPO share: the reward model used to judge, the previous version."""

    reward: str | None = knob(None, "reward adapter: NAME@alias, NAME@N or a local PEFT folder")
    parent: str | None = knob(None, "previous version to compare with (default NAME@production)")
    init_from_parent: bool = knob(False, "start from the parent's LoRA weights, not a fresh LoRA")
    temperature: float = knob(1.0, "sampling temperature of rollouts and evaluation")
    max_eval_prompts: int = knob(64, "cap on held-out prompts used for evaluation")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise _fail("temperature", f"must be > 0, got {self.temperature}")
        for name in ("reward", "parent"):
            ref = getattr(self, name)
            if ref and not is_folder_ref(ref):
                try:
                    parse_ref(ref)
                except InvalidName as e:
                    raise _fail(name, f"{e}; or give a local adapter folder") from None
        if self.init_from_parent and self.parent is None:
            self.parent = f"{self.adapter}@production"

    @property
    def parent_ref(self) -> str:
        return self.parent or f"{self.adapter}@production"


@dataclass(kw_only=True)
class PPOConfig(PolicyConfig):
    """PPO: policy LoRA + value head, reference = base, reward = the reward adapter."""

    prompts: str = knob(help="prompts: JSONL (prompt or input_text) or preference rows, or .txt")
    reward: str | None = knob(
        None, "reward adapter (required): NAME@alias, NAME@N or a PEFT folder"
    )
    train_steps: int = knob(
        50, "rollout + PPO-update iterations (Vertex reinforcement_learning_train_steps)"
    )
    learning_rate: float = knob(1e-4, "AdamW learning rate")
    kl_coeff: float = knob(0.1, "weight of the per-token KL penalty against the base")
    adaptive_kl: bool = knob(False, "adapt kl_coeff towards kl_target (Ziegler et al.)")
    kl_target: float = knob(6.0, "adaptive KL: target KL per response")
    kl_horizon: int = knob(10000, "adaptive KL: horizon in rollouts")
    kl_estimator: Literal["k1", "k2", "k3"] = knob("k1", "per-token KL estimator in the penalty")
    gamma: float = knob(1.0, "discount")
    lam: float = knob(0.95, "GAE lambda")
    cliprange: float = knob(0.2, "policy ratio clip epsilon")
    cliprange_value: float = knob(0.2, "value clip epsilon")
    vf_coef: float = knob(0.1, "weight of the value loss")
    ppo_epochs: int = knob(4, "passes over each rollout batch")
    num_minibatches: int = knob(2, "minibatches per PPO epoch")
    whiten_rewards: bool = knob(False, "whiten per-token rewards before GAE")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.prompts:
            raise _fail("prompts", "a prompt file is required")
        if not self.reward:
            raise _fail("reward", "PPO needs a reward adapter, e.g. summarize-rm@production")
        if self.kl_coeff < 0:
            raise _fail("kl_coeff", f"must be >= 0, got {self.kl_coeff}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise _fail("gamma", "gamma and lam must be in [0, 1]")
        if self.cliprange <= 0 or self.cliprange_value <= 0:
            raise _fail("cliprange", "cliprange and cliprange_value must be > 0")
        if self.ppo_epochs < 1 or self.num_minibatches < 1:
            raise _fail("ppo_epochs", "ppo_epochs and num_minibatches must be >= 1")
        if self.batch_size % self.num_minibatches:
            raise _fail("num_minibatches", f"must divide batch_size ({self.batch_size})")
        if self.adaptive_kl and (self.kl_target <= 0 or self.kl_horizon < 1):
            raise _fail("kl_target", "adaptive KL needs kl_target > 0 and kl_horizon >= 1")


@dataclass(kw_only=True)
class DPOConfig(PolicyConfig):
    """DPO straight from preference pairs; reference = the base (adapter disabled)."""

    data: str = knob(help="preference pairs: JSONL in Vertex or TRL format (.gz ok)")
    beta: float = knob(0.1, "DPO temperature beta")
    label_smoothing: float = knob(0.0, "conservative DPO: assumed label noise in [0, 0.5)")
    rpo_alpha: float = knob(
        0.0, "weight of the chosen completions' per-token NLL added to the loss (RPO; 0 = off)"
    )
    learning_rate: float = knob(5e-4, "AdamW learning rate")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise _fail("data", "a preference data file is required")
        if self.beta <= 0:
            raise _fail("beta", f"must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise _fail("label_smoothing", f"must be in [0, 0.5), got {self.label_smoothing}")
        if self.rpo_alpha < 0:
            raise _fail("rpo_alpha", f"must be >= 0 (0 turns it off), got {self.rpo_alpha}")


# --- from a table of values ---


def build_config(cls: type[C], values: dict[str, Any]) -> C:
    """``cls(**values)`` with unknown keys and wrong types reported as ValueError."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}",
            unknown[0],
        )
    values = dict(values)
    gates = values.get("gates")
    if isinstance(gates, dict):
        valid = {f.name for f in dataclasses.fields(Gates)}
        bad = sorted(set(gates) - valid)
        if bad:
            raise ConfigError(
                f"unknown gate(s) {', '.join(bad)}; valid: {', '.join(sorted(valid))}",
                f"gates.{bad[0]}",
            )
        for name, value in gates.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ConfigError(f"gate {name}: expected a number, got {value!r}", f"gates.{name}")
        values["gates"] = Gates(**{k: None if v is None else float(v) for k, v in gates.items()})
    if isinstance(values.get("target_modules"), str):
        values["target_modules"] = [
            m.strip() for m in values["target_modules"].split(",") if m.strip()
        ]
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _fail(missing[0], "required")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        values[name] = _coerce(name, hints[name], value)
    return cls(**values)


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Light type checking of file values (YAML ints where floats are expected, etc.)."""
    if value is None or hint is Gates:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, inner[0], value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is not hint:
        raise _fail(name, f"expected {hint.__name__}, got {value!r}")
    if origin is Literal and value not in args:
        raise _fail(name, f"use one of {', '.join(map(str, args))}; got {value!r}")
    return value
