"""``Store``: the SQL store of completions, feedback, snapshots and jobs, built once and injected.

::

    store = Store.from_settings(settings)        # opens the database, migrates to head
    store.completions.log([Completion(...)])
    store.feedback.add(FeedbackCreate(...))
    store.snapshots.create("summarize")
    store.jobs.claim_next(worker="local-1")
    store.close()
"""

from __future__ import annotations

from typing import Any

from core.settings import Settings
from core.store.completions import Completions
from core.store.db import Database, open_database
from core.store.feedback import FeedbackRepository
from core.store.job_queries import JobQueries
from core.store.jobs import Jobs
from core.store.labeling import Labeling
from core.store.migrate import upgrade
from core.store.snapshots import Snapshots
from core.store.stats import Stats


class Store:
    """One database (SQLite file or PostgreSQL) behind small repositories. Thread-safe."""

    def __init__(self, database: Database):
        self.database = database
        self.completions = Completions(database)
        self.feedback = FeedbackRepository(database)
        self.snapshots = Snapshots(database)
        self.stats = Stats(database)
        self.jobs = Jobs(database)
        self.job_queries = JobQueries(database)
        self.labeling = Labeling(database)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, **engine_kwargs: Any) -> Store:
        """Open the database at a SQLAlchemy URL, migrating it to head unless ``migrate=False``."""
        database = open_database(url, **engine_kwargs)
        try:
            if migrate:
                upgrade(database)
        except BaseException:
            database.dispose()
            raise
        return cls(database)

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate: bool = True) -> Store:
        """The store named by ``settings.database_url`` (default: SQLite in the data dir)."""
        assert settings.database_url is not None  # Settings derives it from data_dir
        return cls.open(settings.database_url, migrate=migrate)

    def close(self) -> None:
        """Write the feedback still queued, then close the connection pool."""
        self.feedback.close()
        self.database.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
