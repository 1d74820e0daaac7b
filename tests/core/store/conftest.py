"""Every store test runs twice: on a SQLite file and on PostgreSQL (``database_url`` from
tests/fixtures/databases.py, one fresh schema per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.store import Store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A migrated store on the test's database."""
    opened = Store.open(database_url)
    yield opened
    opened.close()
