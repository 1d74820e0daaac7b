"""The completion log: what each served request produced, so feedback can point at it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import InvalidRequest, NotFound
from core.names import AdapterVersion
from core.store.db import Database
from core.store.models import ID_LENGTH, CompletionRow, utcnow
from core.store.records import Completion


class Completions:
    """Log and read served completions. Built by ``Store``; thread-safe."""

    def __init__(self, database: Database):
        self._db = database

    def log(self, completions: Iterable[Completion]) -> int:
        """Insert a batch in one transaction; returns how many were new.

        Ids already logged are skipped, so a writer may safely retry a batch whose commit it
        could not confirm.
        """
        now = utcnow()
        rows = [_row_values(c, now) for c in completions]
        if not rows:
            return 0
        # RETURNING counts what was inserted (executemany rowcount is unreliable on psycopg);
        # SQLAlchemy batches it into multi-row INSERTs on both backends.
        statement = self._db.insert_ignoring_duplicates(CompletionRow).returning(CompletionRow.id)
        with self._db.write() as session:
            return len(session.execute(statement, rows).all())

    def get(self, completion_id: str) -> Completion:
        """The logged completion; NotFound if there is none with that id."""
        with self._db.read() as session:
            row = session.get(CompletionRow, completion_id)
            if row is None:
                raise NotFound(f"no completion with id {completion_id!r}")
            return to_completion(row)


def _row_values(completion: Completion, now: datetime) -> dict[str, object]:
    if not completion.id or len(completion.id) > ID_LENGTH:
        raise InvalidRequest(f"completion id must be 1-{ID_LENGTH} characters", param="id")
    return {
        "id": completion.id,
        "adapter": completion.version.adapter if completion.version else None,
        "version": completion.version.version if completion.version else None,
        "prompt": completion.prompt,
        "text": completion.text,
        "sampling_params": completion.sampling_params,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "latency_ms": completion.latency_ms,
        "created_at": completion.created_at or now,
    }


def to_completion(row: CompletionRow) -> Completion:
    return Completion(
        id=row.id,
        prompt=row.prompt,
        text=row.text,
        version=stored_version(row.adapter, row.version),
        sampling_params=row.sampling_params,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        latency_ms=row.latency_ms,
        created_at=row.created_at,
    )


def prompts_and_texts(session: Session, ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(prompt, text) of each logged completion among ``ids``."""
    statement = select(CompletionRow.id, CompletionRow.prompt, CompletionRow.text).where(
        CompletionRow.id.in_(list(ids))
    )
    return {row.id: (row.prompt, row.text) for row in session.execute(statement)}


def stored_version(adapter: str | None, version: int | None) -> AdapterVersion | None:
    """The version a completion row names: its adapter and version columns, both NULL for
    the base model."""
    return None if adapter is None or version is None else AdapterVersion(adapter, version)
