"""Bulk import of preference files: one file is one batch and one transaction.

Every line is parsed and validated before the transaction starts: bad lines are reported with
their line number and reason, good lines are inserted together. A crash mid-import leaves
nothing of the batch in the store, and the write lock (SQLite) is held only while inserting,
not while parsing.

With an idempotency key the batch can be retried safely: line N is stored under the key
``"<key>:<N>"``, so a retry of an import that did commit finds every row already there and
inserts none twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import BinaryIO, TypeVar

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidRequest
from core.store.db import Database
from core.store.formats import FIELD_NAMES, detect_format, parse_row, read_lines
from core.store.models import FeedbackRow, utcnow
from core.store.records import ExportFormat, FeedbackSource, ImportReport, RejectedRow
from core.store.validation import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_LABELER_CHARS,
    ValidFeedback,
    check_text,
    check_use_case,
    parse_source,
    validate_feedback,
)

MAX_REPORTED_REJECTIONS = 1000
INSERT_CHUNK_ROWS = 500  # rows per INSERT statement and per idempotency-key lookup
_KEY_PREFIX_CHARS = MAX_IDEMPOTENCY_KEY_CHARS - 12  # room for ":<line number>"

T = TypeVar("T")


def import_jsonl(
    database: Database,
    file: str | os.PathLike[str] | BinaryIO,
    *,
    use_case: str,
    fmt: ExportFormat | None = None,
    labeler: str | None = None,
    source: FeedbackSource | str = FeedbackSource.HUMAN,
    idempotency_key: str | None = None,
) -> ImportReport:
    """Import a JSONL file, Vertex or TRL (``fmt=None``: detected from the first JSON object).

    Raises InvalidRequest for a problem with the whole request (bad use case, unknown format,
    empty or unreadable file); problems with single lines go into the report instead.
    """
    check_use_case(use_case)
    parse_source(source)
    if labeler is not None:
        check_text(labeler, "labeler", MAX_LABELER_CHARS)
    if idempotency_key is not None:
        check_text(idempotency_key, "idempotency_key", _KEY_PREFIX_CHARS)
    if fmt is not None and fmt not in FIELD_NAMES:
        raise InvalidRequest(f"format must be 'vertex' or 'trl', got {fmt!r}", param="format")

    fmt, valid, rejected = _parse(file, fmt, use_case, labeler, source, idempotency_key)
    inserted, duplicates, conflicts = _insert(database, valid)
    rejected = sorted(rejected + conflicts, key=lambda r: r.line)
    return ImportReport(
        format=fmt,
        accepted=inserted + duplicates,
        duplicates=duplicates,
        rejected_count=len(rejected),
        rejected=rejected[:MAX_REPORTED_REJECTIONS],
    )


def _parse(
    file: str | os.PathLike[str] | BinaryIO,
    fmt: ExportFormat | None,
    use_case: str,
    labeler: str | None,
    source: FeedbackSource | str,
    idempotency_key: str | None,
) -> tuple[ExportFormat, list[tuple[int, ValidFeedback]], list[RejectedRow]]:
    valid: list[tuple[int, ValidFeedback]] = []
    rejected: list[RejectedRow] = []
    for number, text in read_lines(file):
        if text is None:
            rejected.append(RejectedRow(number, "not UTF-8 text"))
            continue
        if not text.strip():
            continue  # blank lines (a trailing newline, say) are not rows
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            rejected.append(RejectedRow(number, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(row, dict):
            rejected.append(RejectedRow(number, "not a JSON object"))
            continue
        if fmt is None:
            fmt = detect_format(row)
            if fmt is None:
                raise InvalidRequest(
                    f"line {number}: cannot tell the format; expected Vertex fields (input_text, "
                    "candidate_0, candidate_1, choice) or TRL fields (prompt, chosen, rejected)",
                    param="format",
                )
        key = None if idempotency_key is None else f"{idempotency_key}:{number}"
        try:
            new = parse_row(
                fmt, row, use_case=use_case, labeler=labeler, source=source, idempotency_key=key
            )
            valid.append((number, validate_feedback(new, names=FIELD_NAMES[fmt])))
        except InvalidRequest as exc:
            rejected.append(RejectedRow(number, str(exc)))
    if fmt is None:
        raise InvalidRequest("file: holds no JSON object lines", param="file")
    return fmt, valid, rejected


def _insert(
    database: Database, rows: Sequence[tuple[int, ValidFeedback]]
) -> tuple[int, int, list[RejectedRow]]:
    """Insert in one transaction; returns (inserted, duplicates, key conflicts)."""
    inserted = duplicates = 0
    conflicts: list[RejectedRow] = []
    now = utcnow()
    try:
        with database.write() as session:
            for chunk in _chunks(rows, INSERT_CHUNK_ROWS):
                known = _known_keys(session, chunk)
                values = []
                for number, valid in chunk:
                    stored = known.get(valid.idempotency_key) if valid.idempotency_key else None
                    if stored is None:
                        values.append(valid.row_values(now))
                    elif stored == valid.body_sha256():
                        duplicates += 1
                    else:
                        reason = f"idempotency key {valid.idempotency_key!r} was already used"
                        conflicts.append(RejectedRow(number, reason + " for a different row"))
                if values:
                    session.execute(insert(FeedbackRow), values)
                    inserted += len(values)
    except IntegrityError as exc:
        # Only a concurrent import with the same key can collide (PostgreSQL; SQLite
        # serialises writers). Nothing of this batch was stored.
        raise Conflict(
            "a concurrent import used the same idempotency key; retry this import"
        ) from exc
    return inserted, duplicates, conflicts


def _known_keys(session: Session, chunk: Sequence[tuple[int, ValidFeedback]]) -> dict[str, str]:
    """idempotency key -> stored body hash, for the keys of ``chunk`` already in the store."""
    keys = [v.idempotency_key for _, v in chunk if v.idempotency_key is not None]
    if not keys:
        return {}
    use_case = chunk[0][1].use_case
    statement = select(FeedbackRow.idempotency_key, FeedbackRow.body_sha256).where(
        FeedbackRow.use_case == use_case, FeedbackRow.idempotency_key.in_(keys)
    )
    return {key: sha for key, sha in session.execute(statement) if key is not None}


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
