"""Promotion on human votes, checked by the worker: a pending candidate (``NAME@candidate`` on
another version than ``NAME@production``) moves to production once labelers prefer it.

Only candidates whose own run asked for it are moved: the run set ``promote`` and a human-vote
gate (``min_human_votes`` or ``min_human_win_lower_bound``), and every other gate of that run
passed on the version's metrics. Such a run leaves production alone at its end (nobody has voted
yet); from then on ``training.gates.promote_on_votes`` applies the same gate the dashboard shows
(at least the votes asked for, Wilson 95% lower bound of the win rate above the bound) and moves
production by compare-and-swap. A candidate without those settings waits for a person.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from core.errors import NotFound
from core.registry import Registry
from core.store import Store
from training.config import Gates
from training.gates import (
    CANDIDATE,
    HUMAN_GATES,
    PRODUCTION,
    Promotion,
    check_gates,
    promote_on_votes,
)

log = logging.getLogger(__name__)


def vote_gates(lineage: dict[str, Any], metrics: dict[str, Any]) -> Gates | None:
    """The gates of the run that made a candidate, if it asked to be promoted on votes and
    passed every other gate; else None."""
    config = lineage.get("config") or {}
    gates = Gates(**(config.get("gates") or {}))
    if not config.get("promote") or all(getattr(gates, g) is None for g in HUMAN_GATES):
        return None
    offline = dataclasses.replace(gates, **{g: None for g in HUMAN_GATES})
    if not all(g.passed for g in check_gates(offline, metrics)):
        return None
    return gates


def promote_pending(registry: Registry, store: Store) -> list[Promotion]:
    """Check every pending candidate that asked for it; the decisions taken (moved or not)."""
    decisions = []
    for adapter in registry.list_adapters():
        try:
            aliases = registry.aliases(adapter)
            candidate, production = aliases.get(CANDIDATE), aliases.get(PRODUCTION)
            if candidate is None or production is None or candidate == production:
                continue
            manifest = registry.manifest(adapter, candidate)
        except NotFound:  # removed meanwhile
            continue
        gates = vote_gates(manifest.lineage, manifest.metrics) if manifest.kind == "policy" else None
        if gates is None:
            continue
        decision = promote_on_votes(registry, store, adapter, gates)
        if decision.production:
            log.info("moved %s@production to %s: %s", adapter, candidate, decision.reason)
        decisions.append(decision)
    return decisions
