"""Which job metrics the dashboard plots: one table, by job kind.

Each plot lists the metric names it accepts, first match wins: TRL's names first (what the jobs
runner will log, see issue 12), then the names our trainers log today.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.store import JobKind


@dataclass(frozen=True)
class PlotSpec:
    title: str
    names: tuple[str, ...]


POLICY_PLOTS = (
    PlotSpec("Reward mean", ("objective/scores", "objective/rlhf_reward", "reward")),
    PlotSpec("KL to the reference", ("objective/kl", "kl")),
    PlotSpec("Policy loss", ("loss/policy_avg", "pg_loss")),
    PlotSpec("Value loss", ("loss/value_avg", "vf_loss")),
    PlotSpec("Response length", ("response_length", "val/response_length")),
)
REWARD_PLOTS = (
    PlotSpec("Loss", ("loss",)),
    PlotSpec("Accuracy", ("accuracy", "reward_accuracy")),
    PlotSpec("Margin", ("margin",)),
)
DPO_PLOTS = (
    PlotSpec("Loss", ("loss",)),
    PlotSpec("Reward accuracy", ("rewards/accuracies", "accuracy")),
    PlotSpec("Reward margin", ("rewards/margins", "margin")),
)
PLOTS: dict[JobKind, tuple[PlotSpec, ...]] = {
    JobKind.PPO: POLICY_PLOTS,
    JobKind.PIPELINE: POLICY_PLOTS,
    JobKind.REWARD: REWARD_PLOTS,
    JobKind.DPO: DPO_PLOTS,
}
