"""The one place where a training run's progress records become a job's metric series, named
as TRL names them where TRL has the quantity (PPOTrainer, RewardTrainer, DPOTrainer).

    ppo     reward -> objective/scores, kl -> objective/kl, pg_loss -> loss/policy_avg,
            vf_loss -> loss/value_avg, response_length -> completions/mean_length, ...
    reward  loss, accuracy (train); eval_accuracy, eval_margin (held-out, as TRL prefixes eval)
    dpo     loss, rewards/accuracies, logps/margin (log p(chosen) - log p(rejected))

In a ``round`` the reward model's series get the prefix ``reward_model/`` (TRL would train it
in a run of its own), so its ``loss`` and DPO's never share a series.
"""

from __future__ import annotations

import math
from typing import Any

TRL_NAMES: dict[tuple[str, str], dict[str, str]] = {
    ("ppo", "train"): {
        "reward": "objective/scores",
        "kl": "objective/kl",
        "kl_coeff": "objective/kl_coef",
        "loss": "loss/total_avg",
        "pg_loss": "loss/policy_avg",
        "vf_loss": "loss/value_avg",
        "clipfrac": "policy/clipfrac_avg",
        "approx_kl": "policy/approxkl_avg",
        "vf_clipfrac": "val/clipfrac_avg",
        "response_length": "completions/mean_length",
        "advantage_mean": "advantages/mean",
    },
    ("reward", "train"): {"loss": "loss", "accuracy": "accuracy"},
    ("reward", "eval"): {"reward_accuracy": "eval_accuracy", "reward_margin": "eval_margin"},
    ("dpo", "train"): {"loss": "loss", "accuracy": "rewards/accuracies", "margin": "logps/margin"},
}


def series(algorithm: str, record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The metric values of one progress record (``{"step", "phase", "time", ...}``) under
    their job metric names; unnamed keys and the final summary are left out."""
    names = TRL_NAMES.get((algorithm, record.get("phase", "train")), {})
    out = {}
    for key, name in names.items():
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[prefix + name] = float(value) if value is not None else math.nan
    return out
