"""Adding feedback: both input forms, idempotency keys, and validation errors naming the field."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from core.errors import Conflict, InvalidRequest, NotFound
from core.names import AdapterVersion
from core.store import Completion, FeedbackCreate, FeedbackSource, Store
from core.store.models import FeedbackRow
from core.text_limits import MAX_CANDIDATE_CHARS


def count_feedback(store: Store) -> int:
    with store.database.read() as session:
        return session.scalar(select(func.count()).select_from(FeedbackRow)) or 0


def test_feedback_with_texts_is_stored_and_read_back(store: Store) -> None:
    stored = store.feedback.add(
        FeedbackCreate(
            use_case="summarize",
            prompt="Summarize: the cat sat on the mat.",
            candidates=("A cat sat.", "Mats exist."),
            choice="tie",
            labeler="alice",
            source="model",
            metadata={"rubric": "brevity", "scores": [1, 2]},
        )
    )
    assert stored.choice == "tie"
    assert stored.source is FeedbackSource.MODEL
    assert stored.completion_ids == (None, None)
    assert store.feedback.get(stored.id) == stored


def test_feedback_on_completion_ids_takes_prompt_and_texts_from_the_log(store: Store) -> None:
    store.completions.log(
        [
            Completion(id="cmpl-a", prompt="Q?", text="answer a", version=AdapterVersion("qa", 1)),
            Completion(id="cmpl-b", prompt="Q?", text="answer b", version=AdapterVersion("qa", 2)),
        ]
    )
    stored = store.feedback.add(
        FeedbackCreate(use_case="qa", completion_ids=["cmpl-a", "cmpl-b"], choice=1)
    )
    assert (stored.prompt, stored.candidates) == ("Q?", ("answer a", "answer b"))
    assert stored.completion_ids == ("cmpl-a", "cmpl-b")
    assert stored.choice == 1


def test_feedback_may_prefer_a_logged_completion_over_an_empty_one(store: Store) -> None:
    store.completions.log(
        [
            Completion(id="cmpl-empty", prompt="Q?", text="", version=AdapterVersion("qa", 1)),
            Completion(id="cmpl-full", prompt="Q?", text="an answer", version=AdapterVersion("qa", 2)),
        ]
    )
    stored = store.feedback.add(
        FeedbackCreate(use_case="qa", completion_ids=["cmpl-empty", "cmpl-full"], choice=1)
    )
    assert store.feedback.get(stored.id).candidates == ("", "an answer")
    assert list(store.feedback.export("qa", "trl")) == [
        {"prompt": "Q?", "chosen": "an answer", "rejected": ""}
    ]


def test_a_retry_with_the_same_idempotency_key_returns_the_original(store: Store) -> None:
    new = FeedbackCreate(
        use_case="qa", prompt="Q?", candidates=["x", "y"], choice=0, idempotency_key="req-1"
    )
    first = store.feedback.add(new)
    assert store.feedback.add(new) == first
    assert count_feedback(store) == 1


def test_the_same_key_with_a_different_body_is_a_conflict(store: Store) -> None:
    store.feedback.add(
        FeedbackCreate(
            use_case="qa", prompt="Q?", candidates=["x", "y"], choice=0, idempotency_key="req-1"
        )
    )
    with pytest.raises(Conflict, match="req-1"):
        store.feedback.add(
            FeedbackCreate(
                use_case="qa", prompt="Q?", candidates=["x", "y"], choice=1, idempotency_key="req-1"
            )
        )
    assert count_feedback(store) == 1


def test_idempotency_keys_are_scoped_to_the_use_case(store: Store) -> None:
    for use_case in ("qa", "chat"):
        store.feedback.add(
            FeedbackCreate(
                use_case=use_case, prompt="Q?", candidates=["x", "y"], choice=0, idempotency_key="k"
            )
        )
    assert count_feedback(store) == 2


def test_concurrent_retries_with_one_key_store_one_record(database_url: str) -> None:
    # Each thread has its own Store (own connections), like separate replicas.
    new = FeedbackCreate(
        use_case="qa", prompt="Q?", candidates=["x", "y"], choice=0, idempotency_key="dup"
    )
    stores = [Store.open(database_url) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    ids: list[int] = []
    errors: list[BaseException] = []

    def post(store: Store) -> None:
        barrier.wait()
        try:
            ids.append(store.feedback.add(new).id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert errors == []
        assert len(ids) == len(stores) and len(set(ids)) == 1
        assert count_feedback(stores[0]) == 1
    finally:
        for s in stores:
            s.close()


TEXTS: dict[str, Any] = {"use_case": "qa", "prompt": "Q?", "candidates": ["x", "y"], "choice": 0}


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"use_case": "Not A Name"}, "use_case"),
        ({"choice": 2}, "choice"),
        ({"choice": True}, "choice"),
        ({"choice": "0"}, "choice"),
        ({"source": "robot"}, "source"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"candidates": ["same", "same"]}, "candidates"),
        ({"candidates": ["x", ""]}, "candidates[1]"),
        ({"candidates": ["x" * (MAX_CANDIDATE_CHARS + 1), "y"]}, "candidates[0]"),
        ({"candidates": ["x\x00", "y"]}, "candidates[0]"),
        ({"candidates": ["x", "y", "z"]}, "candidates"),
        ({"candidates": None}, "candidates"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"metadata": {"score": float("nan")}}, "metadata"),
        ({"labeler": ""}, "labeler"),
        ({"completion_ids": ["cmpl-a", "cmpl-b"]}, "completion_ids"),  # both forms at once
    ],
)
def test_invalid_feedback_is_refused_naming_the_field(
    store: Store, changes: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        store.feedback.add(FeedbackCreate(**{**TEXTS, **changes}))
    assert caught.value.param == param
    assert param in str(caught.value)
    assert count_feedback(store) == 0


@pytest.mark.parametrize(
    ("ids", "param"),
    [
        (["cmpl-a", "cmpl-nope"], "completion_ids[1]"),
        (["cmpl-a", "cmpl-other-prompt"], "completion_ids"),
        (["cmpl-a", "cmpl-a"], "completion_ids"),
        (["cmpl-a", "cmpl-same-text"], "completion_ids"),
        (["cmpl-a"], "completion_ids"),
    ],
)
def test_invalid_completion_ids_are_refused_naming_the_field(
    store: Store, ids: list[str], param: str
) -> None:
    store.completions.log(
        [
            Completion(id="cmpl-a", prompt="Q?", text="a"),
            Completion(id="cmpl-same-text", prompt="Q?", text="a"),
            Completion(id="cmpl-other-prompt", prompt="Another?", text="b"),
        ]
    )
    with pytest.raises(InvalidRequest) as caught:
        store.feedback.add(FeedbackCreate(use_case="qa", completion_ids=ids, choice=0))
    assert caught.value.param == param
    assert count_feedback(store) == 0


def test_texts_at_the_length_limit_and_whitespace_replies_are_accepted(store: Store) -> None:
    stored = store.feedback.add(
        FeedbackCreate(**{**TEXTS, "candidates": ["x" * MAX_CANDIDATE_CHARS, " "]})
    )
    assert store.feedback.get(stored.id).candidates[1] == " "


def test_unknown_feedback_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.feedback.get(12345)
