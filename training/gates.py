"""Promotion gates: a run always moves NAME@candidate to its new version, and moves
NAME@production only when promotion was asked for and every configured gate passes.

Gates read the evaluation metrics by name (see ``GATE_METRICS``). A gate whose metric the run
did not produce fails: a missing number never promotes anything. Production moves with a
compare-and-swap against the version the run started from, so two runs finishing together
cannot both promote over each other unseen.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import Conflict
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
}


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
