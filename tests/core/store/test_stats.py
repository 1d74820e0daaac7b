"""Feedback statistics per use case and adapter version, and head-to-head win rates."""

from __future__ import annotations

import itertools

import pytest

from core.errors import InvalidRequest
from core.names import AdapterVersion
from core.store import Completion, FeedbackCreate, Store

V1 = AdapterVersion("qa", 1)
V2 = AdapterVersion("qa", 2)
BASE = None  # the base model
_serial = itertools.count()


def duel(
    store: Store,
    n: int,
    first: AdapterVersion | None,
    second: AdapterVersion | None,
    choice: object,
    use_case: str = "qa",
) -> None:
    """``n`` feedback records comparing a completion of ``first`` (candidate 0) with one of
    ``second`` (candidate 1)."""
    for _ in range(n):
        key = f"{use_case}-{next(_serial)}"
        ids = [f"cmpl-{key}-0", f"cmpl-{key}-1"]
        store.completions.log(
            [
                Completion(id=ids[0], prompt=key, text="zero", version=first),
                Completion(id=ids[1], prompt=key, text="one", version=second),
            ]
        )
        store.feedback.add(FeedbackCreate(use_case=use_case, completion_ids=ids, choice=choice))  # type: ignore[arg-type]


def test_summary_counts_per_use_case_and_per_version(store: Store) -> None:
    duel(store, 3, V2, V1, 0)  # v2 wins 3 as candidate 0
    duel(store, 1, V1, V2, 0)  # v1 wins 1 as candidate 0
    duel(store, 2, V1, V2, "tie")
    store.feedback.add(
        FeedbackCreate(  # texts only: counts for the use case, not for versions
            use_case="qa", prompt="P", candidates=("a", "b"), choice=1, source="model"
        )
    )
    duel(store, 1, BASE, V1, 1, use_case="chat")

    summary = store.stats.summary()

    qa, chat = sorted(summary.use_cases, key=lambda u: u.use_case, reverse=True)
    assert (qa.use_case, qa.feedback, qa.choice_0, qa.choice_1, qa.ties) == ("qa", 7, 4, 1, 2)
    assert (qa.human, qa.model) == (6, 1)
    assert (chat.feedback, chat.choice_1) == (1, 1)
    by_version = {v.version: v for v in summary.versions}
    assert set(by_version) == {BASE, V1, V2}
    assert (
        by_version[V2].candidates,
        by_version[V2].wins,
        by_version[V2].losses,
        by_version[V2].ties,
    ) == (6, 3, 1, 2)
    assert (
        by_version[V1].candidates,
        by_version[V1].wins,
        by_version[V1].losses,
        by_version[V1].ties,
    ) == (7, 2, 3, 2)
    assert (by_version[BASE].wins, by_version[BASE].losses) == (0, 1)

    only_chat = store.stats.summary("chat")
    assert [u.use_case for u in only_chat.use_cases] == ["chat"]
    assert {v.version for v in only_chat.versions} == {BASE, V1}


def test_win_rate_counts_both_orders_and_ties_as_half(store: Store) -> None:
    duel(store, 3, V2, V1, 0)  # v2 (candidate 0) wins
    duel(store, 2, V1, V2, 1)  # v2 (candidate 1) wins
    duel(store, 1, V1, V2, 0)  # v1 wins
    duel(store, 2, V2, V1, "tie")
    duel(store, 4, V2, BASE, 1)  # a different pairing: not counted

    rate = store.stats.win_rate(V2, V1)
    assert (rate.wins, rate.losses, rate.ties, rate.total) == (5, 1, 2, 8)
    assert rate.win_rate == pytest.approx((5 + 1) / 8)

    reverse = store.stats.win_rate(V1, V2)
    assert (reverse.wins, reverse.losses, reverse.total) == (1, 5, 8)
    assert reverse.win_rate == pytest.approx(1 - rate.win_rate)

    base = store.stats.win_rate(BASE, V2)
    assert (base.wins, base.losses, base.total) == (4, 0, 4)


def test_win_rate_without_comparisons_is_none_and_a_version_cannot_face_itself(
    store: Store,
) -> None:
    duel(store, 1, V2, V1, 0, use_case="chat")
    assert store.stats.win_rate(V2, V1, use_case="qa").win_rate is None
    assert store.stats.win_rate(V2, V1, use_case="chat").win_rate == 1.0
    with pytest.raises(InvalidRequest):
        store.stats.win_rate(V1, V1)
