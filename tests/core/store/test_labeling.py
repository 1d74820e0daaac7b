"""Labeling queues: pairs from the completion log, raw votes beside feedback records, overlap,
agreement; and the interval and agreement math they rely on."""

from __future__ import annotations

import pytest

from core.errors import Conflict, InvalidRequest
from core.names import AdapterVersion
from core.store import Completion, Store, WinRate
from core.store.stats import cohen_kappa, human_win_verdict, wilson_interval

PROD = AdapterVersion("qa", 1)
CAND = AdapterVersion("qa", 2)


def log_answers(store: Store, prompt: str, *answers: tuple[AdapterVersion, str]) -> list[str]:
    ids = [f"cmpl-{abs(hash((prompt, i, text)))}" for i, (_, text) in enumerate(answers)]
    store.completions.log(
        Completion(id=i, prompt=prompt, text=text, version=v)
        for i, (v, text) in zip(ids, answers, strict=True)
    )
    return ids


def test_pairs_from_the_log_take_one_completion_of_each_version_per_prompt(store: Store) -> None:
    log_answers(store, "p1", (PROD, "old answer"), (CAND, "new answer"))
    log_answers(store, "p2", (PROD, "only production answered"))
    log_answers(store, "p3", (CAND, "a"), (CAND, "b"))
    queue = store.labeling.create_queue("qa")
    pairs = store.labeling.logged_pairs(queue.id, PROD, CAND)
    assert len(pairs) == 1
    assert store.labeling.add_pairs(queue.id, pairs) == 1
    assert store.labeling.logged_pairs(queue.id, PROD, CAND) == []  # used completions are not reused
    two_samples = store.labeling.logged_pairs(queue.id, CAND, CAND)
    assert len(two_samples) == 1 and store.completions.get(two_samples[0][0]).prompt == "p3"


def test_a_pair_must_hold_two_completions_of_one_prompt(store: Store) -> None:
    (first,) = log_answers(store, "p1", (PROD, "x"))
    (second,) = log_answers(store, "p2", (CAND, "y"))
    queue = store.labeling.create_queue("qa")
    with pytest.raises(InvalidRequest, match="same prompt"):
        store.labeling.add_pairs(queue.id, [(first, second)])


def test_a_vote_adds_a_canonical_feedback_record_and_keeps_the_raw_vote(store: Store) -> None:
    ids = log_answers(store, "p", (PROD, "old"), (CAND, "new"))
    queue = store.labeling.create_queue("qa")
    store.labeling.add_pairs(queue.id, [tuple(ids)])
    pair = store.labeling.next_pair(queue.id, "ann")
    assert pair is not None
    vote = store.labeling.vote(pair.id, "ann", "1", swapped=True, time_ms=1200, rationale=" shorter ")
    feedback = store.feedback.get(vote.feedback_id)
    assert feedback.choice == 1 and feedback.completion_ids == tuple(ids)
    assert feedback.labeler == "ann" and feedback.source == "human"
    assert feedback.metadata["labeling"]["shown"] == ["1", "0"]
    assert vote.rationale == "shorter" and vote.time_ms == 1200
    assert store.stats.win_rate(CAND, PROD, "qa").wins == 1


def test_a_vote_is_idempotent_per_labeler_and_pair_and_final(store: Store) -> None:
    ids = log_answers(store, "p", (PROD, "old"), (CAND, "new"))
    queue = store.labeling.create_queue("qa")
    store.labeling.add_pairs(queue.id, [tuple(ids)])
    pair = store.labeling.next_pair(queue.id, "ann")
    first = store.labeling.vote(pair.id, "ann", "both_bad", swapped=False)
    again = store.labeling.vote(pair.id, "ann", "both_bad", swapped=False, time_ms=99)
    assert again.id == first.id
    assert store.stats.summary("qa").use_cases[0].feedback == 1
    assert store.feedback.get(first.feedback_id).choice == "tie"  # both bad is stored as a tie
    with pytest.raises(Conflict, match="final"):
        store.labeling.vote(pair.id, "ann", "0", swapped=False)


def test_overlap_keeps_a_pair_open_until_enough_labelers_voted(store: Store) -> None:
    ids = log_answers(store, "p", (PROD, "old"), (CAND, "new"))
    queue = store.labeling.create_queue("qa", overlap=2)
    store.labeling.add_pairs(queue.id, [tuple(ids)])
    pair = store.labeling.next_pair(queue.id, "ann")
    store.labeling.vote(pair.id, "ann", "0", swapped=False)
    assert store.labeling.next_pair(queue.id, "ann") is None
    store.labeling.vote(pair.id, "cy", "skip", swapped=False)  # a skip is not a vote
    assert store.labeling.next_pair(queue.id, "bob").id == pair.id
    store.labeling.vote(pair.id, "bob", "0", swapped=True)
    assert store.labeling.next_pair(queue.id, "dee") is None
    progress = store.labeling.progress(queue.id)
    assert (progress.pairs, progress.votes, progress.complete) == (1, 2, 1)
    assert store.labeling.labeler_progress(queue.id, "cy").done == 1


def test_agreement_per_pair_of_labelers_on_the_overlap(store: Store) -> None:
    queue = store.labeling.create_queue("qa", overlap=2)
    verdicts = [("0", "0"), ("1", "1"), ("0", "1"), ("tie", "tie")]
    for n, (ann, bob) in enumerate(verdicts):
        ids = log_answers(store, f"p{n}", (PROD, "old"), (CAND, "new"))
        store.labeling.add_pairs(queue.id, [tuple(ids)])
        pair = store.labeling.next_pair(queue.id, "ann")
        store.labeling.vote(pair.id, "ann", ann, swapped=False)
        store.labeling.vote(pair.id, "bob", bob, swapped=False)
    (agreement,) = store.labeling.agreement(queue.id)
    assert (agreement.labeler_a, agreement.labeler_b, agreement.pairs) == ("ann", "bob", 4)
    assert agreement.percent == 0.75
    assert agreement.kappa == pytest.approx(cohen_kappa([v[0] for v in verdicts], [v[1] for v in verdicts]))


def test_cohen_kappa_matches_a_worked_example() -> None:
    # Wikipedia's example: 50 items, p_o = 0.7, p_e = 0.5 -> kappa = 0.4.
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None


def test_wilson_interval_matches_known_values() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) is None
    assert wilson_interval(0, 5)[0] == 0.0


def test_the_human_win_gate_needs_votes_and_a_lower_bound_over_one_half() -> None:
    def rate(wins: int, losses: int, ties: int = 0) -> WinRate:
        total = wins + losses + ties
        return WinRate(CAND, PROD, wins, losses, ties, total, (wins + ties / 2) / total if total else None)

    few = human_win_verdict(rate(9, 0), min_votes=10)
    assert not few.passed and "9 of the 10 votes" in few.reason
    close = human_win_verdict(rate(12, 8), min_votes=10)  # 60%, but the lower bound is ~0.39
    assert not close.passed and "not above 0.5" in close.reason
    clear = human_win_verdict(rate(18, 2), min_votes=10)
    assert clear.passed and clear.interval[0] > 0.5
