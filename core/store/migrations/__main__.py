"""Developer CLI for the store schema (users never need it: the service migrates on start-up).

python -m core.store.migrations URL upgrade
python -m core.store.migrations URL current
python -m core.store.migrations URL revision -m "add jobs.priority"   # autogenerate
"""

from __future__ import annotations

import argparse

from alembic import command

from core.store.db import open_database
from core.store.migrate import alembic_config, current_revision, head_revision, upgrade


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.store.migrations", description=__doc__)
    parser.add_argument("url", help="SQLAlchemy database URL")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("upgrade", help="migrate to head")
    sub.add_parser("current", help="print the database's revision")
    revision = sub.add_parser("revision", help="autogenerate a revision from models.py")
    revision.add_argument("-m", "--message", required=True)
    args = parser.parse_args(argv)

    database = open_database(args.url)
    try:
        if args.command == "upgrade":
            upgrade(database)
        elif args.command == "current":
            print(current_revision(database))
        else:
            # Compare against a database at head; revision ids count up: 0001, 0002, ...
            next_id = f"{int(head_revision()) + 1:04d}"
            with database.migration_transaction() as conn:
                command.revision(
                    alembic_config(conn), args.message, autogenerate=True, rev_id=next_id
                )
    finally:
        database.dispose()


if __name__ == "__main__":
    main()
