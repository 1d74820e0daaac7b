"""Bulk import of preference files: one file is one batch and one transaction.

The file is streamed twice over bounded memory. First every line is parsed and validated
(``preference_file``, the reader training uses too): bad lines are reported with their line
number and reason, good lines go to a spool (a temporary file: memory up to a few MB, then
disk). Then the spool is inserted in bounded
chunks inside one transaction. A crash or an error mid-import leaves nothing of the batch in
the store, and the write lock (SQLite) is held only while inserting, not while parsing.
``ImportLimits`` bound the line length and the decompressed size (TooLarge).

With an idempotency key the batch can be retried safely: line N is stored under the key
``"<key>:<N>"``, so a retry of an import that did commit finds every row already there and
inserts none twice.
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import IO, BinaryIO

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import Conflict
from core.store.db import Database
from core.store.formats import ImportLimits
from core.store.models import FeedbackRow, utcnow
from core.store.preference_file import PreferenceFile
from core.store.records import FeedbackFormat, FeedbackSource, ImportReport, RejectedRow
from core.store.validation import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_LABELER_CHARS,
    ValidFeedback,
    check_text,
    check_use_case,
    parse_source,
)

MAX_REPORTED_REJECTIONS = 1000
INSERT_CHUNK_ROWS = 500  # rows per INSERT statement and per idempotency-key lookup
INSERT_CHUNK_BYTES = 16 << 20  # and at most this much spooled JSON per chunk
SPOOL_MEMORY_BYTES = 4 << 20  # valid rows beyond this spill to a temporary file
_KEY_PREFIX_CHARS = MAX_IDEMPOTENCY_KEY_CHARS - 12  # room for ":<line number>"


def import_jsonl(
    database: Database,
    file: str | os.PathLike[str] | BinaryIO,
    *,
    use_case: str,
    fmt: FeedbackFormat | None = None,
    labeler: str | None = None,
    source: FeedbackSource | str = FeedbackSource.HUMAN,
    idempotency_key: str | None = None,
    limits: ImportLimits = ImportLimits(),
) -> ImportReport:
    """Import a JSONL file, Vertex or TRL (``fmt=None``: detected from the first JSON object).

    Raises InvalidRequest for a problem with the whole request (bad use case, unknown format,
    empty or unreadable file) and TooLarge for a file over ``limits``; nothing is stored then.
    Problems with single lines go into the report instead.
    """
    check_use_case(use_case)
    parse_source(source)
    if labeler is not None:
        check_text(labeler, "labeler", MAX_LABELER_CHARS)
    if idempotency_key is not None:
        check_text(idempotency_key, "idempotency_key", _KEY_PREFIX_CHARS)

    lines = PreferenceFile(
        file,
        use_case=use_case,
        fmt=fmt,
        labeler=labeler,
        source=source,
        idempotency_key=idempotency_key,
        limits=limits,
    )
    with tempfile.SpooledTemporaryFile(SPOOL_MEMORY_BYTES) as spool:
        fmt, rejected = _parse(lines, spool)
        spool.seek(0)
        inserted, duplicates, conflicts = _insert(database, _spooled_chunks(spool))
    rejected.extend(conflicts)
    return ImportReport(
        format=fmt,
        accepted=inserted + duplicates,
        duplicates=duplicates,
        rejected_count=rejected.count,
        rejected=rejected.first(),
    )


class _Rejections:
    """A count of rejected lines and the first ``MAX_REPORTED_REJECTIONS`` of them by line
    number: a file of a million bad lines must not hold a million reasons in memory."""

    def __init__(self) -> None:
        self.count = 0
        self._kept: list[RejectedRow] = []

    def add(self, row: RejectedRow) -> None:
        """Rows arrive in line order (per source): later ones past the cap are only counted."""
        self.count += 1
        if len(self._kept) < MAX_REPORTED_REJECTIONS:
            self._kept.append(row)

    def extend(self, other: _Rejections) -> None:
        self.count += other.count
        merged = heapq.merge(self._kept, other._kept, key=lambda r: r.line)
        self._kept = list(merged)[:MAX_REPORTED_REJECTIONS]

    def first(self) -> list[RejectedRow]:
        return list(self._kept)


def _parse(lines: PreferenceFile, spool: IO[bytes]) -> tuple[FeedbackFormat, _Rejections]:
    """Read every line; write the valid ones to ``spool`` (one JSON line each)."""
    rejected = _Rejections()
    for line in lines:
        if line.feedback is None:
            assert line.rejection is not None
            rejected.add(RejectedRow(line.number, line.rejection))
        else:
            spool.write(_to_spool(line.number, line.feedback))
    assert lines.format is not None  # reading the file to its end found one, or raised
    return lines.format, rejected


def _to_spool(number: int, valid: ValidFeedback) -> bytes:
    return json.dumps([number, asdict(valid)], separators=(",", ":")).encode() + b"\n"


def _from_spool(line: bytes) -> tuple[int, ValidFeedback]:
    number, fields = json.loads(line)
    fields["candidates"] = tuple(fields["candidates"])
    fields["completion_ids"] = tuple(fields["completion_ids"])
    fields["source"] = FeedbackSource(fields["source"])
    return number, ValidFeedback(**fields)


def _spooled_chunks(spool: IO[bytes]) -> Iterator[list[tuple[int, ValidFeedback]]]:
    """The spooled rows in chunks of at most INSERT_CHUNK_ROWS rows and about
    INSERT_CHUNK_BYTES of JSON."""
    chunk: list[tuple[int, ValidFeedback]] = []
    size = 0
    for line in spool:
        chunk.append(_from_spool(line))
        size += len(line)
        if len(chunk) >= INSERT_CHUNK_ROWS or size >= INSERT_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _insert(
    database: Database, chunks: Iterable[Sequence[tuple[int, ValidFeedback]]]
) -> tuple[int, int, _Rejections]:
    """Insert in one transaction; returns (inserted, duplicates, key conflicts)."""
    inserted = duplicates = 0
    conflicts = _Rejections()
    now = utcnow()
    try:
        with database.write() as session:
            for chunk in chunks:
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
                        conflicts.add(RejectedRow(number, reason + " for a different row"))
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
