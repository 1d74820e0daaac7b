"""Migrations: from empty to head, idempotent, identical to the models, safe under concurrent
start-up; SQLite runs in WAL mode with a busy timeout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from core.settings import Settings
from core.store import Store, current_revision, head_revision, open_database, upgrade
from core.store.models import Base

REPO = Path(__file__).parents[3]


def test_upgrade_from_empty_database_reaches_head_with_every_table(database_url: str) -> None:
    database = open_database(database_url)
    try:
        assert current_revision(database) is None
        upgrade(database)
        assert current_revision(database) == head_revision()
        tables = set(inspect(database.engine).get_table_names())
        assert tables == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        database.dispose()


def test_migrated_schema_matches_the_models_exactly(store: Store) -> None:
    with store.database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_upgrading_again_keeps_data_and_does_nothing(database_url: str) -> None:
    with Store.open(database_url) as first:
        job = first.jobs.create("dpo", "summarize")
    with Store.open(database_url) as second:  # migrates again on open
        assert current_revision(second.database) == head_revision()
        assert second.jobs.get(job.id).use_case == "summarize"


def test_concurrent_start_up_of_several_processes_migrates_once(database_url: str) -> None:
    # Separate processes, not threads: Alembic keeps global state, and the lock under test is
    # the database's (advisory lock / BEGIN IMMEDIATE), which only processes exercise honestly.
    script = "import sys\nfrom core.store import Store\nStore.open(sys.argv[1]).close()\n"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, database_url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in processes]
    for returncode, stderr in outcomes:
        assert returncode == 0, stderr
    database = open_database(database_url)
    try:
        assert current_revision(database) == head_revision()
        with database.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        database.dispose()


def test_default_store_is_a_sqlite_file_in_wal_mode_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with Store.from_settings(settings) as store:
        assert (tmp_path / "data" / "loraloop.db").is_file()
        with store.database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


@pytest.mark.parametrize("url", ["mysql://user@localhost/db", "sqlite://", "sqlite:///:memory:"])
def test_unsupported_database_urls_are_refused_with_a_reason(url: str) -> None:
    with pytest.raises(ValueError, match="database_url"):
        open_database(url)


def test_a_refused_database_url_does_not_show_its_password() -> None:
    with pytest.raises(ValueError) as refused:
        open_database("mysql://loader:s3cret-pw@db.internal/feedback")
    assert "s3cret-pw" not in str(refused.value)
    assert "loader:***@db.internal" in str(refused.value)
