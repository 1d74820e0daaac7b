"""Feedback snapshots: the immutable training sets that a new adapter version records in its
lineage (snapshot id + sha256).

A snapshot freezes the *ids* of a use case's non-tie feedback at creation time; feedback is
never updated, so reading the same snapshot later yields the same rows in the same order, and
``rows`` proves it by recomputing the hash.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable

from sqlalchemy import insert, select

from core.errors import IntegrityError, InvalidRequest, NotFound
from core.store.db import Database
from core.store.formats import to_preference
from core.store.models import FeedbackRow, SnapshotItemRow, SnapshotRow, utcnow
from core.store.records import TIE, PreferenceRow, Snapshot
from core.store.validation import check_use_case

_INSERT_CHUNK_ROWS = 5000
_PAIR_COLUMNS = (
    FeedbackRow.id,
    FeedbackRow.prompt,
    FeedbackRow.candidate_0,
    FeedbackRow.candidate_1,
    FeedbackRow.choice,
)


def content_sha256(rows: Iterable[PreferenceRow]) -> str:
    """sha256 over canonical JSON lines (sorted keys, compact, UTF-8), one per row, in order.

    Depends only on content, not on ids or database: the same pairs hash the same anywhere.
    """
    digest = hashlib.sha256()
    for row in rows:
        line = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


class Snapshots:
    """Create and read feedback snapshots. Built by ``Store``; thread-safe."""

    def __init__(self, database: Database):
        self._db = database

    def create(self, use_case: str) -> Snapshot:
        """Freeze the use case's current preference pairs (ties excluded).

        InvalidRequest if the use case has no pairs: there would be nothing to train on.
        """
        check_use_case(use_case)
        statement = (
            select(*_PAIR_COLUMNS)
            .where(FeedbackRow.use_case == use_case, FeedbackRow.choice != TIE)
            .order_by(FeedbackRow.id)
        )
        with self._db.write() as session:
            # One SELECT: on PostgreSQL it sees a single consistent view of committed rows.
            selected = session.execute(statement).all()
            if not selected:
                raise InvalidRequest(
                    f"use case {use_case!r} has no preference pairs to snapshot", param="use_case"
                )
            rows = [_pair(r.prompt, r.candidate_0, r.candidate_1, r.choice) for r in selected]
            snapshot = SnapshotRow(
                id=f"snap-{uuid.uuid4().hex}",
                use_case=use_case,
                row_count=len(rows),
                sha256=content_sha256(rows),
                created_at=utcnow(),
            )
            session.add(snapshot)
            session.flush()
            items = [{"snapshot_id": snapshot.id, "feedback_id": r.id} for r in selected]
            for start in range(0, len(items), _INSERT_CHUNK_ROWS):
                session.execute(insert(SnapshotItemRow), items[start : start + _INSERT_CHUNK_ROWS])
            return _to_snapshot(snapshot)

    def get(self, snapshot_id: str) -> Snapshot:
        with self._db.read() as session:
            row = session.get(SnapshotRow, snapshot_id)
            if row is None:
                raise NotFound(f"no feedback snapshot with id {snapshot_id!r}")
            return _to_snapshot(row)

    def rows(self, snapshot_id: str) -> list[PreferenceRow]:
        """The snapshot's training pairs (prompt, chosen, rejected), in feedback-id order.

        Raises IntegrityError if they no longer hash to the recorded sha256 (the database was
        edited behind the store's back): training must not silently use different data.
        """
        statement = (
            select(*_PAIR_COLUMNS)
            .join(SnapshotItemRow, SnapshotItemRow.feedback_id == FeedbackRow.id)
            .where(SnapshotItemRow.snapshot_id == snapshot_id)
            .order_by(FeedbackRow.id)
        )
        with self._db.read() as session:
            snapshot = session.get(SnapshotRow, snapshot_id)
            if snapshot is None:
                raise NotFound(f"no feedback snapshot with id {snapshot_id!r}")
            found = session.execute(statement)
            rows = [_pair(r.prompt, r.candidate_0, r.candidate_1, r.choice) for r in found]
        if len(rows) != snapshot.row_count or content_sha256(rows) != snapshot.sha256:
            raise IntegrityError(
                f"feedback snapshot {snapshot_id} no longer matches its sha256 {snapshot.sha256}"
            )
        return rows

    # Last in the class: a method named ``list`` would shadow the builtin in annotations below.
    def list(self, use_case: str | None = None) -> list[Snapshot]:
        """Snapshots, newest first."""
        statement = select(SnapshotRow).order_by(SnapshotRow.created_at.desc(), SnapshotRow.id)
        if use_case is not None:
            statement = statement.where(SnapshotRow.use_case == use_case)
        with self._db.read() as session:
            return [_to_snapshot(row) for row in session.scalars(statement)]


def _pair(prompt: str, candidate_0: str, candidate_1: str, choice: int) -> PreferenceRow:
    return to_preference(prompt, (candidate_0, candidate_1), choice)


def _to_snapshot(row: SnapshotRow) -> Snapshot:
    return Snapshot(
        id=row.id,
        use_case=row.use_case,
        row_count=row.row_count,
        sha256=row.sha256,
        created_at=row.created_at,
    )
