"""What the dashboard pages render: plots of a job's metrics, job rows, version comparisons.

The pages are HTML (Jinja2 templates), so these are plain dataclasses, not JSON schemas.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.names import AdapterVersion
from core.store import Job
from core.store.stats import HumanWinVerdict


@dataclass(frozen=True)
class Plot:
    title: str
    metric: str | None  # the name found, None when the job logged none of the spec's names
    steps: list[int]
    values: list[float | None]  # None where the value was not finite (uPlot draws a gap)


@dataclass(frozen=True)
class JobRow:
    job: Job
    spark: list[float]  # the first plot's series, for a sparkline


@dataclass(frozen=True)
class Comparison:
    """Candidate against production of one adapter: the online promotion gate on human votes,
    and the reward model's win rate from the candidate's evaluation."""

    adapter: str
    candidate: AdapterVersion | None  # None: the base model
    production: AdapterVersion | None
    human: HumanWinVerdict
    gate_source: str  # where the gate's thresholds came from
    reward_model_win_rate: float | None
    reward_model_source: str  # "judged pairs" (model feedback) or "evaluation" (version metrics)
    # Whether the job worker moves production when the gate passes: the candidate's run asked
    # for promotion on votes (training/jobs/promotions.py); None for a version pair picked by hand.
    automatic: bool | None = None
