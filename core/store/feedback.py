"""Pairwise feedback: add one record (idempotently), read it, import and export files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import BinaryIO

from sqlalchemy import select, tuple_
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidRequest, NotFound
from core.store import importer
from core.store.completions import prompts_and_texts
from core.store.db import Database
from core.store.formats import ImportLimits, to_preference, to_vertex
from core.store.group_commit import GroupCommit
from core.store.models import FeedbackRow, utcnow
from core.store.records import (
    TIE,
    Feedback,
    FeedbackCreate,
    FeedbackFormat,
    FeedbackSource,
    ImportReport,
    PreferenceRow,
    VertexRow,
)
from core.store.validation import ValidFeedback, check_use_case, choice_label, validate_feedback

EXPORT_PAGE_ROWS = 1000


class FeedbackRepository:
    """Store and read pairwise feedback. Built by ``Store``; thread-safe."""

    def __init__(self, database: Database):
        self._db = database
        self._writer: GroupCommit[FeedbackCreate, Feedback] = GroupCommit(self.add_batch, "loraloop-feedback")

    def add(self, new: FeedbackCreate) -> Feedback:
        """Validate and store ``new``; InvalidRequest names the bad field.

        With an idempotency key, a retry (same key, same body, same use case) returns the
        record stored the first time instead of a second one; the same key with a different
        body raises Conflict. Concurrent calls share transactions (``group_commit``); each
        returns once the transaction holding its record has committed.
        """
        return self.submit(new).result()

    def submit(self, new: FeedbackCreate) -> Future[Feedback]:
        """``add`` without the wait: the future holds what ``add`` would return or raise, set
        once the record is durable. An event loop awaits it with ``asyncio.wrap_future``,
        holding no thread meanwhile."""
        return self._writer.submit(new)

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._writer.close()

    def add_batch(self, news: list[FeedbackCreate]) -> list[Feedback | Exception]:
        """Add ``news`` in one transaction: one outcome per record, its Feedback or the
        InvalidRequest/Conflict that refused it alone."""
        try:
            with self._db.write() as session:
                return self._add_all(session, news)
        except DBAPIError:
            # A statement failed and took the transaction with it: on PostgreSQL, most likely a
            # concurrent writer (another replica) committed one of our idempotency keys between
            # our lookup and our insert. Each record alone tells whose it was.
            return [_outcome(self._add_alone, new) for new in news]

    def _add_all(self, session: Session, news: list[FeedbackCreate]) -> list[Feedback | Exception]:
        completions = _completions(session, news)
        checked = [_checked(new, completions) for new in news]
        # Stored rows by (use case, key), then also the rows this batch adds: a retry that
        # arrives in the same batch as its first attempt replays it too.
        by_key = _find_by_keys(session, [c for c in checked if isinstance(c, ValidFeedback)])
        now = utcnow()
        outcomes: list[FeedbackRow | Exception] = []
        for c in checked:
            if isinstance(c, Exception):
                outcomes.append(c)
                continue
            key = (c.use_case, c.idempotency_key)
            earlier = by_key.get(key) if c.idempotency_key is not None else None
            if earlier is not None:
                if earlier.id is None:
                    session.flush()  # added by this batch: the conflict names its id
                outcomes.append(_conflict(earlier, c) or earlier)
                continue
            row = FeedbackRow(**c.row_values(now))
            session.add(row)
            outcomes.append(row)
            if c.idempotency_key is not None:
                by_key[key] = row
        session.flush()  # one multi-row INSERT; assigns the ids
        return [o if isinstance(o, Exception) else to_feedback(o) for o in outcomes]

    def _add_alone(self, new: FeedbackCreate) -> Feedback:
        try:
            with self._db.write() as session:
                valid = self._validate(session, new)
                existing = _find_by_key(session, valid)
                if existing is not None:
                    return _replay(existing, valid)
                row = FeedbackRow(**valid.row_values(utcnow()))
                session.add(row)
                session.flush()  # assigns row.id
                return to_feedback(row)
        except IntegrityError:
            # PostgreSQL: a concurrent request with the same key committed between our lookup
            # and our insert. (SQLite's write lock makes that impossible.) It is a replay.
            if new.idempotency_key is None:
                raise
            with self._db.read() as session:
                valid = self._validate(session, new)
                existing = _find_by_key(session, valid)
                if existing is None:
                    raise
                return _replay(existing, valid)

    def get(self, feedback_id: int) -> Feedback:
        """The stored record; NotFound if there is none with that id."""
        with self._db.read() as session:
            row = session.get(FeedbackRow, feedback_id)
            if row is None:
                raise NotFound(f"no feedback with id {feedback_id}")
            return to_feedback(row)

    def import_jsonl(
        self,
        file: str | os.PathLike[str] | BinaryIO,
        *,
        use_case: str,
        fmt: FeedbackFormat | None = None,
        labeler: str | None = None,
        source: FeedbackSource | str = FeedbackSource.HUMAN,
        idempotency_key: str | None = None,
        limits: ImportLimits = ImportLimits(),
    ) -> ImportReport:
        """Import a Vertex or TRL JSONL file (gzip or plain) as one batch; see ``importer``."""
        return importer.import_jsonl(
            self._db,
            file,
            use_case=use_case,
            fmt=fmt,
            labeler=labeler,
            source=source,
            idempotency_key=idempotency_key,
            limits=limits,
        )

    def export(
        self, use_case: str, fmt: FeedbackFormat = "vertex", *, include_ties: bool = False
    ) -> Iterator[VertexRow | PreferenceRow]:
        """The use case's feedback in id order, as Vertex or TRL rows (dicts).

        Ties have no TRL form; in Vertex form they are left out unless ``include_ties``
        (then ``"choice": "tie"``, which Vertex itself does not accept). Arguments are checked
        now; rows are read page by page as the iterator is consumed, each page in its own
        short transaction, so a slow consumer (an HTTP stream) holds no transaction open.
        """
        check_use_case(use_case)
        if fmt not in ("vertex", "trl"):
            raise InvalidRequest(f"format must be 'vertex' or 'trl', got {fmt!r}", param="format")
        if fmt == "trl" and include_ties:
            raise InvalidRequest("the TRL format cannot represent ties", param="include_ties")
        return self._export(use_case, fmt, include_ties)

    def _export(
        self, use_case: str, fmt: FeedbackFormat, include_ties: bool
    ) -> Iterator[VertexRow | PreferenceRow]:
        after = 0
        while True:
            statement = (
                select(
                    FeedbackRow.id,
                    FeedbackRow.prompt,
                    FeedbackRow.candidate_0,
                    FeedbackRow.candidate_1,
                    FeedbackRow.choice,
                )
                .where(FeedbackRow.use_case == use_case, FeedbackRow.id > after)
                .order_by(FeedbackRow.id)
                .limit(EXPORT_PAGE_ROWS)
            )
            if not include_ties:
                statement = statement.where(FeedbackRow.choice != TIE)
            with self._db.read() as session:
                page = session.execute(statement).all()
            for row in page:
                pair = (row.candidate_0, row.candidate_1)
                if fmt == "vertex":
                    yield to_vertex(row.prompt, pair, row.choice)
                else:
                    yield to_preference(row.prompt, pair, row.choice)
            if len(page) < EXPORT_PAGE_ROWS:
                return
            after = page[-1].id

    def _validate(self, session: Session, new: FeedbackCreate) -> ValidFeedback:
        completions = None
        if new.completion_ids is not None and not isinstance(new.completion_ids, str):
            ids = [i for i in new.completion_ids if isinstance(i, str)]
            completions = prompts_and_texts(session, ids)
        return validate_feedback(new, completions)


def _find_by_key(session: Session, valid: ValidFeedback) -> FeedbackRow | None:
    if valid.idempotency_key is None:
        return None
    return session.scalar(
        select(FeedbackRow).where(
            FeedbackRow.use_case == valid.use_case,
            FeedbackRow.idempotency_key == valid.idempotency_key,
        )
    )


def _find_by_keys(session: Session, valid: list[ValidFeedback]) -> dict[tuple[str, str | None], FeedbackRow]:
    """The stored rows of the batch's (use case, idempotency key) pairs, in one query."""
    pairs = {(v.use_case, v.idempotency_key) for v in valid if v.idempotency_key is not None}
    if not pairs:
        return {}
    rows = session.scalars(
        select(FeedbackRow).where(tuple_(FeedbackRow.use_case, FeedbackRow.idempotency_key).in_(pairs))
    )
    return {(row.use_case, row.idempotency_key): row for row in rows}


def _completions(session: Session, news: list[FeedbackCreate]) -> dict[str, tuple[str, str]]:
    """(prompt, text) of every logged completion the batch names, in one query."""
    ids = {
        i for new in news
        if new.completion_ids is not None and not isinstance(new.completion_ids, str)
        for i in new.completion_ids if isinstance(i, str)
    }
    return prompts_and_texts(session, ids) if ids else {}


def _checked(new: FeedbackCreate, completions: dict[str, tuple[str, str]]) -> ValidFeedback | InvalidRequest:
    try:
        return validate_feedback(new, completions)
    except InvalidRequest as e:
        return e


def _outcome(add: Callable[[FeedbackCreate], Feedback], new: FeedbackCreate) -> Feedback | Exception:
    try:
        return add(new)
    except Exception as e:  # refused or failed: this record's caller gets the error
        return e


def _conflict(existing: FeedbackRow, valid: ValidFeedback) -> Conflict | None:
    """Conflict when ``valid`` reuses ``existing``'s key for a different body; None for a retry."""
    if existing.body_sha256 == valid.body_sha256():
        return None
    return Conflict(
        f"idempotency key {valid.idempotency_key!r} was already used for different "
        f"feedback (id {existing.id}); use a new key for a new record"
    )


def _replay(existing: FeedbackRow, valid: ValidFeedback) -> Feedback:
    conflict = _conflict(existing, valid)
    if conflict is not None:
        raise conflict
    return to_feedback(existing)


def to_feedback(row: FeedbackRow) -> Feedback:
    return Feedback(
        id=row.id,
        use_case=row.use_case,
        prompt=row.prompt,
        candidates=(row.candidate_0, row.candidate_1),
        completion_ids=(row.completion_id_0, row.completion_id_1),
        choice=choice_label(row.choice),
        labeler=row.labeler,
        source=row.source,
        metadata=row.meta,
        idempotency_key=row.idempotency_key,
        created_at=row.created_at,
    )
