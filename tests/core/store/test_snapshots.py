"""Snapshots: immutable, reproducible training sets (ties excluded), verified on read."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from core.errors import IntegrityError, InvalidRequest, NotFound
from core.store import FeedbackCreate, Store
from core.store.models import FeedbackRow
from core.store.snapshots import content_sha256


def add(store: Store, prompt: str, choice: object, use_case: str = "qa") -> None:
    store.feedback.add(
        FeedbackCreate(
            use_case=use_case,
            prompt=prompt,
            candidates=("first", "second"),
            choice=choice,  # type: ignore[arg-type]
        )
    )


def test_rows_are_prompt_chosen_rejected_without_ties(store: Store) -> None:
    add(store, "p0", 0)
    add(store, "tie", "tie")
    add(store, "p1", 1)
    add(store, "other use case", 0, use_case="chat")
    snapshot = store.snapshots.create("qa")
    assert snapshot.row_count == 2
    assert store.snapshots.rows(snapshot.id) == [
        {"prompt": "p0", "chosen": "first", "rejected": "second"},
        {"prompt": "p1", "chosen": "second", "rejected": "first"},
    ]


def test_feedback_added_later_is_not_in_an_earlier_snapshot(store: Store) -> None:
    add(store, "p0", 0)
    old = store.snapshots.create("qa")
    old_rows = store.snapshots.rows(old.id)
    add(store, "p1", 1)
    new = store.snapshots.create("qa")

    assert store.snapshots.rows(old.id) == old_rows
    assert store.snapshots.get(old.id) == old
    assert old.sha256 == content_sha256(old_rows)
    assert (new.row_count, old.row_count) == (2, 1)
    assert new.sha256 != old.sha256


def test_the_hash_depends_only_on_content(store: Store, hh_rlhf: Path) -> None:
    store.feedback.import_jsonl(hh_rlhf, use_case="harmless")
    first = store.snapshots.create("harmless")
    again = store.snapshots.create("harmless")  # nothing changed in between
    assert first.id != again.id
    assert first.sha256 == again.sha256
    assert first.row_count == 2312
    # Pinned: the same file gives the same hash on SQLite, PostgreSQL and any later run.
    assert first.sha256 == "b8110f233e7e53edd3b4fbf0ad508077014324726890b929c7b3e8da4c8e88f1"
    assert [s.id for s in store.snapshots.list("harmless")] == [again.id, first.id]


def test_a_snapshot_whose_rows_were_edited_behind_the_store_fails_to_read(store: Store) -> None:
    add(store, "p0", 0)
    snapshot = store.snapshots.create("qa")
    with store.database.write() as session:
        session.execute(update(FeedbackRow).values(candidate_0="tampered"))
    with pytest.raises(IntegrityError, match=snapshot.id):
        store.snapshots.rows(snapshot.id)


def test_a_use_case_without_pairs_cannot_be_snapshotted(store: Store) -> None:
    add(store, "only a tie", "tie")
    with pytest.raises(InvalidRequest) as caught:
        store.snapshots.create("qa")
    assert caught.value.param == "use_case"


def test_an_unknown_snapshot_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.snapshots.get("snap-missing")
    with pytest.raises(NotFound):
        store.snapshots.rows("snap-missing")
