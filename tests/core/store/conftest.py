"""Every store test runs twice: on a SQLite file and on PostgreSQL (``database_url`` from
tests/databases.py, one fresh schema per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.store import Store

# The data lives beside the repository: ../shared/data/hh-rlhf-harmless-base/.
HH_RLHF = Path(__file__).parents[4] / "shared/data/hh-rlhf-harmless-base/test.jsonl.gz"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A migrated store on the test's database."""
    opened = Store.open(database_url)
    yield opened
    opened.close()


@pytest.fixture
def hh_rlhf() -> Path:
    assert HH_RLHF.exists(), f"missing test data {HH_RLHF}"
    return HH_RLHF
