"""`python -m training feedback import FILE --use-case NAME`: load preference files into the store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import LoraloopError
from core.settings import Settings
from core.store import ImportLimits, Store


def add_feedback_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("feedback", help="import or export pairwise feedback")
    actions = parser.add_subparsers(dest="feedback_action", required=True)
    load = actions.add_parser("import", help="import a JSONL file (Vertex or TRL rows, gzip or plain)")
    load.add_argument("file", type=Path)
    load.add_argument("--use-case", required=True, help="the adapter name the preferences are for")
    load.add_argument("--format", choices=["vertex", "trl"], default=None, help="detected when omitted")
    load.add_argument("--labeler", default=None)
    load.add_argument("--source", choices=["human", "model"], default="human")
    load.add_argument("--idempotency-key", default=None, help="makes re-running the same import a no-op")


def feedback_command(args: argparse.Namespace) -> int:
    try:
        settings = Settings()
        with Store.from_settings(settings) as store:
            # A local file: only the line length bounds memory (lines are streamed); the
            # server's size caps guard against remote callers and do not apply here.
            report = store.feedback.import_jsonl(
                args.file, use_case=args.use_case, fmt=args.format, labeler=args.labeler,
                source=args.source, idempotency_key=args.idempotency_key,
                limits=ImportLimits(max_line_bytes=settings.max_import_line_bytes),
            )
    except (LoraloopError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.file}: {report.accepted} accepted ({report.duplicates} already imported), "
          f"{report.rejected_count} rejected [{report.format} format]")
    for row in report.rejected:
        print(f"  line {row.line}: {row.reason}", file=sys.stderr)
    return 0
