"""Which job metrics the dashboard plots: one table, by job kind.

Each plot lists the metric names it accepts, first match wins: the series a job writes, named
as training/jobs/metric_names.py names them (TRL's names).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.store import JobKind


@dataclass(frozen=True)
class PlotSpec:
    title: str
    names: tuple[str, ...]


POLICY_PLOTS = (
    PlotSpec("Reward mean", ("objective/scores",)),
    PlotSpec("KL to the reference", ("objective/kl",)),
    PlotSpec("Policy loss", ("loss/policy_avg",)),
    PlotSpec("Value loss", ("loss/value_avg",)),
    PlotSpec("Response length", ("completions/mean_length",)),
)
REWARD_PLOTS = (
    PlotSpec("Loss", ("loss",)),
    PlotSpec("Accuracy", ("eval_accuracy", "accuracy")),  # held-out once evaluated, else train
    PlotSpec("Margin", ("eval_margin",)),
)
DPO_PLOTS = (
    PlotSpec("Loss", ("loss",)),
    PlotSpec("Reward accuracy", ("rewards/accuracies",)),
    PlotSpec("Margin", ("logps/margin",)),
)
# A round's reward model reports under "reward_model/" (training/jobs/metric_names.py).
ROUND_PLOTS = POLICY_PLOTS + tuple(
    PlotSpec(f"Reward model {p.title.lower()}", tuple(f"reward_model/{n}" for n in p.names))
    for p in REWARD_PLOTS
)
PLOTS: dict[JobKind, tuple[PlotSpec, ...]] = {
    JobKind.PPO: POLICY_PLOTS,
    JobKind.ROUND: ROUND_PLOTS,
    JobKind.REWARD: REWARD_PLOTS,
    JobKind.DPO: DPO_PLOTS,
}
