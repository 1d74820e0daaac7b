"""Schema migrations, applied in code at start-up: ``upgrade(database)``.

The Alembic environment ships inside the package (``core/store/migrations``), so users need no
alembic.ini. Each upgrade runs in one transaction holding a database-wide lock (see
``Database.migration_transaction``): when two processes start at once on a new database, the
second waits, then finds the schema at head and does nothing.

Developers write a new revision, after changing ``models.py``, against a database at head::

    python -m core.store.migrations sqlite:///tmp/dev.db revision -m "add jobs.priority"
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from core.store.db import Database

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code; ``connection`` is what env.py migrates."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found in the package"
    return head


def current_revision(database: Database) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with database.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to call from several processes at once."""
    with database.migration_transaction() as conn:
        command.upgrade(alembic_config(conn), revision)
