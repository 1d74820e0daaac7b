"""Promotion gates: a run always moves NAME@candidate to its new version, and moves
NAME@production only when promotion was asked for and every configured gate passes.

Gates read the evaluation metrics by name (see ``GATE_METRICS``). A gate whose metric the run
did not produce fails: a missing number never promotes anything. Production moves with a
compare-and-swap against the version the run started from, so two runs finishing together
cannot both promote over each other unseen.

The human-vote gates (``min_human_votes``, ``min_human_win_lower_bound``) are the online
comparison: a run that sets them leaves production alone at the end (no one has voted on the new
version yet); ``promote_on_votes`` moves NAME@production to NAME@candidate later, once labelers
comparing the two on the labeling page prefer the candidate with enough confidence. The numbers
are those the dashboard shows (``core.store.stats.human_win_verdict``).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import Conflict, InvalidRequest
from core.names import AdapterVersion
from core.store import FeedbackSource, Store
from core.store.stats import (
    DEFAULT_MIN_HUMAN_VOTES,
    DEFAULT_MIN_HUMAN_WIN_LOWER_BOUND,
    wilson_interval,
)
from training.config import Gates

if TYPE_CHECKING:  # core.registry imports boto3: loaded on first use only, not at import
    from core.registry import Registry

log = logging.getLogger(__name__)

CANDIDATE, PRODUCTION = "candidate", "production"

# gate -> (metric it reads, comparison that must hold)
GATE_METRICS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "min_reward_gain": ("reward_gain", operator.ge),
    "max_kl": ("kl_to_base", operator.le),
    "min_reward_accuracy": ("reward_accuracy", operator.ge),
    "min_win_rate": ("win_rate", operator.ge),
    "min_margin_gain": ("margin_gain", operator.ge),
    "min_human_votes": ("human_votes", operator.ge),
    # "over 0.5": a lower bound of exactly one half does not show a preference.
    "min_human_win_lower_bound": ("human_win_lower_bound", operator.gt),
}
HUMAN_GATES = ("min_human_votes", "min_human_win_lower_bound")


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    threshold: float
    value: float | None
    passed: bool


def check_gates(gates: Gates, metrics: Mapping[str, Any]) -> list[GateResult]:
    results = []
    for gate, threshold in gates.active().items():
        metric, holds = GATE_METRICS[gate]
        value = metrics.get(metric)
        passed = isinstance(value, (int, float)) and holds(float(value), threshold)
        results.append(GateResult(gate, metric, threshold, value, passed))
    return results


@dataclass
class Promotion:
    version: int
    candidate: bool = False
    production: bool = False
    requested: bool = False
    gates: list[GateResult] = field(default_factory=list)
    reason: str = ""

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["gates_passed"] = self.gates_passed
        return out


def promote(
    registry: Registry,
    adapter: str,
    version: int,
    gates: Gates,
    metrics: Mapping[str, Any],
    *,
    requested: bool,
    expected_production: int | None,
) -> Promotion:
    """Move NAME@candidate, then NAME@production if requested and the gates pass.

    ``expected_production`` is what NAME@production pointed to when the run started (None if
    absent); if another writer moved it since, production is left alone and the reason says so.
    """
    result = Promotion(version=version, requested=requested, gates=check_gates(gates, metrics))
    registry.set_alias(adapter, CANDIDATE, version)  # always, whatever it pointed to
    result.candidate = True
    if not requested:
        result.reason = "promotion not requested (--promote)"
    elif not result.gates_passed:
        failed = [
            f"{g.gate} ({g.metric}={g.value}, needs {g.threshold})"
            for g in result.gates
            if not g.passed
        ]
        result.reason = "gates failed: " + "; ".join(failed)
    else:
        try:
            registry.set_alias(adapter, PRODUCTION, version, expected=expected_production)
            result.production = True
            result.reason = "gates passed" if result.gates else "promoted (no gates configured)"
        except Conflict as e:
            result.reason = f"not promoted: {e}"
    log.info(
        "%s@%s: candidate moved; production %s (%s)",
        adapter,
        version,
        "moved" if result.production else "unchanged",
        result.reason,
    )
    return result


def human_win_metrics(store: Store, adapter: str, candidate: int, production: int) -> dict[str, Any]:
    """Human votes of ``candidate`` against ``production`` (ties count half): the metrics the
    human-vote gates read."""
    rate = store.stats.win_rate(
        AdapterVersion(adapter, candidate), AdapterVersion(adapter, production), adapter,
        source=FeedbackSource.HUMAN,
    )
    interval = wilson_interval(rate.wins + rate.ties / 2, rate.total)
    return {
        "human_votes": rate.total,
        "human_win_rate": rate.win_rate,
        "human_win_lower_bound": interval[0] if interval else None,
    }


def promote_on_votes(registry: Registry, store: Store, adapter: str, gates: Gates) -> Promotion:
    """Move NAME@production to NAME@candidate if the human-vote gates pass.

    Gates not set in ``gates`` take the dashboard's defaults (20 votes, lower bound over 0.5).
    Production moves by compare-and-swap against the version it pointed to when read.
    """
    aliases = registry.aliases(adapter)
    candidate, production = aliases.get(CANDIDATE), aliases.get(PRODUCTION)
    if candidate is None or production is None:
        raise InvalidRequest(f"{adapter} needs both a candidate and a production alias to compare")
    human = Gates(
        min_human_votes=gates.min_human_votes or DEFAULT_MIN_HUMAN_VOTES,
        min_human_win_lower_bound=(
            DEFAULT_MIN_HUMAN_WIN_LOWER_BOUND if gates.min_human_win_lower_bound is None
            else gates.min_human_win_lower_bound
        ),
    )
    metrics = human_win_metrics(store, adapter, candidate, production)
    result = Promotion(version=candidate, requested=True, gates=check_gates(human, metrics))
    if candidate == production:
        result.reason = f"{adapter}@{candidate} is already production"
    elif not result.gates_passed:
        failed = [f"{g.gate} ({g.metric}={g.value}, needs {g.threshold})" for g in result.gates if not g.passed]
        result.reason = "gates failed: " + "; ".join(failed)
    else:
        try:
            registry.set_alias(adapter, PRODUCTION, candidate, expected=production)
            result.production = True
            result.reason = f"labelers prefer {adapter}@{candidate} over {adapter}@{production}"
        except Conflict as e:
            result.reason = f"not promoted: {e}"
    log.info("%s@%s on human votes: %s", adapter, candidate, result.reason)
    return result
