"""Alembic environment and revisions of the store schema (run through ``core.store.migrate``)."""
