"""A job's kind and config overrides, turned into the training configs it will run.

The jobs API calls ``plan_job`` at submit time, so a bad override is a 400 naming the field
(``params.learning_rate``), and ``python -m training run-job`` calls it again to run the job.

    kind     params                                          runs
    reward   RewardConfig overrides                          NAME-rm on feedback:NAME
    ppo      PPOConfig overrides                             NAME against NAME-rm@production
    dpo      DPOConfig overrides                             NAME on feedback:NAME
    round    {"algorithm": "ppo" | "dpo",                    snapshot of NAME's feedback, NAME-rm
              "reward_model": {...}, "policy": {...}}        on it, then NAME by PPO or DPO

Fields a job sets itself (``JOB_FIELDS``: the adapter names, data sources, files) cannot be
overridden. In a ``round`` both stages promote by default (``promote: false`` to keep
production where it is): their gates decide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import InvalidRequest
from core.store.records import JobKind
from core.training_config import (
    ConfigError,
    DPOConfig,
    PPOConfig,
    RewardConfig,
    TrainConfig,
    build_config,
)

Algorithm = Literal["reward", "ppo", "dpo"]
JOB_FIELDS = frozenset(
    {"adapter", "data", "prompts", "job_id", "metrics_file", "output_dir", "progress", "register"}
)
ROUND_KEYS = frozenset({"algorithm", "reward_model", "policy"})
CONFIGS: dict[str, type[TrainConfig]] = {
    "reward": RewardConfig,
    "ppo": PPOConfig,
    "dpo": DPOConfig,
}


@dataclass(frozen=True)
class Stage:
    """One training run of a job: ``algorithm`` with its full config."""

    algorithm: Algorithm
    config: TrainConfig


def reward_adapter(use_case: str) -> str:
    """The reward model of a use case: ``NAME-rm``."""
    return f"{use_case}-rm"


def plan_job(
    kind: JobKind | str,
    use_case: str,
    params: Mapping[str, Any] | None,
    *,
    job_id: str | None = None,
    data: str | None = None,
) -> list[Stage]:
    """The stages a job runs; InvalidRequest naming ``params.FIELD`` when an override is bad.

    ``data`` is the preference source (default ``feedback:USE_CASE``; a round passes the
    ``snapshot:ID`` it took)."""
    try:
        kind = JobKind(str(kind))
    except ValueError:
        allowed = ", ".join(k.value for k in JobKind)
        raise InvalidRequest(f"kind: must be one of {allowed}, got {kind!r}", param="kind") from None
    params = dict(params or {})
    source = data or f"feedback:{use_case}"
    if kind != JobKind.ROUND:
        return [_stage(kind.value, use_case, params, source, job_id, "params", round_=False)]
    unknown = sorted(set(params) - ROUND_KEYS)
    if unknown:
        raise InvalidRequest(
            f"params.{unknown[0]}: a round takes {', '.join(sorted(ROUND_KEYS))}; "
            "put training settings under reward_model or policy",
            param=f"params.{unknown[0]}",
        )
    algorithm = params.get("algorithm", "ppo")
    if algorithm not in ("ppo", "dpo"):
        raise InvalidRequest(
            f"params.algorithm: use ppo or dpo, got {algorithm!r}", param="params.algorithm"
        )
    return [
        _stage("reward", use_case, params.get("reward_model"), source, job_id,
               "params.reward_model", round_=True),
        _stage(algorithm, use_case, params.get("policy"), source, job_id,
               "params.policy", round_=True),
    ]


def _stage(
    algorithm: str,
    use_case: str,
    overrides: Any,
    source: str,
    job_id: str | None,
    where: str,
    *,
    round_: bool,
) -> Stage:
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, Mapping):
        raise InvalidRequest(f"{where}: must be a JSON object of settings", param=where)
    fixed = sorted(JOB_FIELDS & set(overrides))
    if fixed:
        raise InvalidRequest(
            f"{where}.{fixed[0]}: set by the job itself, leave it out", param=f"{where}.{fixed[0]}"
        )
    values: dict[str, Any] = {"job_id": job_id, "progress": False}
    if round_:
        values["promote"] = True
    if algorithm == "reward":
        values.update(adapter=reward_adapter(use_case), data=source)
    else:
        values["adapter"] = use_case
        values["prompts" if algorithm == "ppo" else "data"] = source
        if algorithm == "ppo":
            values["reward"] = f"{reward_adapter(use_case)}@production"
    values.update(overrides)
    try:
        config = build_config(CONFIGS[algorithm], values)
    except ConfigError as e:
        raise InvalidRequest(f"{where}.{e.param}: {e.reason}", param=f"{where}.{e.param}") from None
    except (TypeError, ValueError) as e:  # a value of a type no field takes
        raise InvalidRequest(f"{where}: {e}", param=where) from None
    return Stage(algorithm, config)  # type: ignore[arg-type]


def with_source(stage: Stage, source: str) -> Stage:
    """The stage reading ``source`` (a round's snapshot) instead of live feedback."""
    field = "prompts" if stage.algorithm == "ppo" else "data"
    changes: dict[str, Any] = {field: source}  # both fields are strings
    return Stage(stage.algorithm, dataclasses.replace(stage.config, **changes))
