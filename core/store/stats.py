"""Feedback statistics: counts per use case, per adapter version, and head-to-head win rates.

Per-version figures need to know which version produced a candidate, so they count only
candidates that are logged completions (feedback given as ``completion_ids``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.orm import aliased

from core.errors import InvalidRequest
from core.names import AdapterVersion
from core.store.completions import stored_version
from core.store.db import Database
from core.store.models import CompletionRow, FeedbackRow
from core.store.records import (
    TIE,
    FeedbackSource,
    FeedbackStats,
    UseCaseStats,
    VersionStats,
    WinRate,
)
from core.store.validation import check_use_case

Z_95 = 1.959964  # two-sided 95% normal quantile


def _count_if(condition: ColumnElement[bool]) -> Any:
    # SUM(CASE ...) rather than COUNT(*) FILTER: the same SQL on SQLite and PostgreSQL.
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _produced_by(completion: Any, version: AdapterVersion | None) -> ColumnElement[bool]:
    # The base model (None) is adapter NULL, version NULL.
    if version is None:
        return and_(completion.adapter.is_(None), completion.version.is_(None))
    return and_(completion.adapter == version.adapter, completion.version == version.version)


def _base_first(version: AdapterVersion | None) -> tuple[str, int]:
    return ("", 0) if version is None else (version.adapter, version.version)


class Stats:
    """Read-only aggregates over feedback and completions. Built by ``Store``; thread-safe."""

    def __init__(self, database: Database):
        self._db = database

    def summary(self, use_case: str | None = None) -> FeedbackStats:
        """Counts per use case, and per adapter version how its candidates fared."""
        if use_case is not None:
            check_use_case(use_case)
        f = FeedbackRow
        per_use_case = (
            select(
                f.use_case,
                func.count().label("feedback"),
                _count_if(f.choice == 0).label("choice_0"),
                _count_if(f.choice == 1).label("choice_1"),
                _count_if(f.choice == TIE).label("ties"),
                _count_if(f.source == FeedbackSource.HUMAN).label("human"),
                _count_if(f.source == FeedbackSource.MODEL).label("model"),
            )
            .group_by(f.use_case)
            .order_by(f.use_case)
        )
        if use_case is not None:
            per_use_case = per_use_case.where(f.use_case == use_case)

        with self._db.read() as session:
            use_cases = [
                UseCaseStats(
                    use_case=r.use_case,
                    feedback=int(r.feedback),
                    choice_0=int(r.choice_0),
                    choice_1=int(r.choice_1),
                    ties=int(r.ties),
                    human=int(r.human),
                    model=int(r.model),
                )
                for r in session.execute(per_use_case)
            ]
            totals: dict[AdapterVersion | None, list[int]] = {}
            for side in (0, 1):
                for r in session.execute(_per_version_side(side, use_case)):
                    counts = totals.setdefault(stored_version(r.adapter, r.version), [0, 0, 0, 0])
                    for i, n in enumerate((r.candidates, r.wins, r.losses, r.ties)):
                        counts[i] += int(n)
        versions = [
            VersionStats(version=v, candidates=c[0], wins=c[1], losses=c[2], ties=c[3])
            for v, c in sorted(totals.items(), key=lambda item: _base_first(item[0]))
        ]
        return FeedbackStats(use_cases=use_cases, versions=versions)

    def win_rate(
        self, a: AdapterVersion | None, b: AdapterVersion | None, use_case: str | None = None,
        source: FeedbackSource | None = None,
    ) -> WinRate:
        """How ``a``'s completions fared against ``b``'s where feedback compared the two
        (only feedback from ``source``, human or model, when given)."""
        if a == b:
            raise InvalidRequest(f"compare two different versions, got {a} twice", param="b")
        if use_case is not None:
            check_use_case(use_case)
        f = FeedbackRow
        c0, c1 = aliased(CompletionRow), aliased(CompletionRow)
        a0, a1 = _produced_by(c0, a), _produced_by(c1, a)
        b0, b1 = _produced_by(c0, b), _produced_by(c1, b)
        statement = (
            select(
                func.count().label("total"),
                _count_if(or_(and_(a0, f.choice == 0), and_(a1, f.choice == 1))).label("wins"),
                _count_if(or_(and_(b0, f.choice == 0), and_(b1, f.choice == 1))).label("losses"),
                _count_if(f.choice == TIE).label("ties"),
            )
            .select_from(f)
            .join(c0, c0.id == f.completion_id_0)
            .join(c1, c1.id == f.completion_id_1)
            .where(or_(and_(a0, b1), and_(b0, a1)))
        )
        if use_case is not None:
            statement = statement.where(f.use_case == use_case)
        if source is not None:
            statement = statement.where(f.source == source)
        with self._db.read() as session:
            r = session.execute(statement).one()
        total, wins, losses, ties = int(r.total), int(r.wins), int(r.losses), int(r.ties)
        rate = (wins + ties / 2) / total if total else None
        return WinRate(a=a, b=b, wins=wins, losses=losses, ties=ties, total=total, win_rate=rate)


def _per_version_side(side: int, use_case: str | None) -> Select[Any]:
    """Per (adapter, version): candidates on ``side`` (0 or 1) and their wins/losses/ties."""
    f = FeedbackRow
    c = aliased(CompletionRow)
    completion_id = f.completion_id_0 if side == 0 else f.completion_id_1
    statement = (
        select(
            c.adapter,
            c.version,
            func.count().label("candidates"),
            _count_if(f.choice == side).label("wins"),
            _count_if(f.choice == 1 - side).label("losses"),
            _count_if(f.choice == TIE).label("ties"),
        )
        .select_from(f)
        .join(c, c.id == completion_id)
        .group_by(c.adapter, c.version)
    )
    if use_case is not None:
        statement = statement.where(f.use_case == use_case)
    return statement


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (95% by default); None when ``n`` is 0.

    Unlike the normal approximation it stays inside [0, 1] and is sensible for few votes,
    which is when a promotion decision most needs it. A tie counts as half a win.
    """
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items: (p_o - p_e) / (1 - p_e).

    None when chance agreement p_e is 1 (both raters used one and the same label throughout),
    where kappa is undefined.
    """
    assert len(a) == len(b) and a, "kappa needs two equally long, non-empty label lists"
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[k] * count_b[k] for k in count_a) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


# Defaults of the online promotion gate when a run's config does not set it.
DEFAULT_MIN_HUMAN_VOTES = 20
DEFAULT_MIN_HUMAN_WIN_LOWER_BOUND = 0.5


@dataclass(frozen=True, slots=True)
class HumanWinVerdict:
    """Whether people prefer ``rate.a`` (candidate) over ``rate.b`` (production) enough to
    promote it: at least ``min_votes`` votes, and the Wilson 95% lower bound of the win rate
    strictly above ``min_lower_bound``. ``reason`` says why, in words for the dashboard."""

    rate: WinRate
    interval: tuple[float, float] | None
    min_votes: int
    min_lower_bound: float
    passed: bool
    reason: str


def human_win_verdict(
    rate: WinRate,
    min_votes: int = DEFAULT_MIN_HUMAN_VOTES,
    min_lower_bound: float = DEFAULT_MIN_HUMAN_WIN_LOWER_BOUND,
) -> HumanWinVerdict:
    """The online comparison's gate on human votes of ``rate.a`` against ``rate.b``."""
    interval = wilson_interval(rate.wins + rate.ties / 2, rate.total)
    if interval is None or rate.total < min_votes:
        passed = False
        reason = f"{rate.total} of the {max(min_votes, 1)} votes needed so far"
    else:
        low = interval[0]
        passed = low > min_lower_bound
        relation = "above" if passed else "not above"
        reason = (
            f"{rate.a} wins {rate.win_rate:.1%} of {rate.total} votes against {rate.b}; the 95% "
            f"lower bound {low:.3f} is {relation} {min_lower_bound}"
        )
    return HumanWinVerdict(rate, interval, min_votes, min_lower_bound, passed, reason)
