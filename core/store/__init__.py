"""The SQL store (SQLite or PostgreSQL): completions, pairwise feedback, snapshots and jobs.

Build one ``Store`` at start-up (``Store.from_settings``) and inject it; it migrates the schema
on open. Records going in and out are the plain dataclasses of ``core.store.records``.
"""

from core.store.db import Database, open_database
from core.store.formats import ImportLimits
from core.store.migrate import current_revision, head_revision, upgrade
from core.store.records import (
    Agreement,
    Choice,
    Completion,
    Feedback,
    FeedbackCreate,
    FeedbackFormat,
    FeedbackSource,
    FeedbackStats,
    ImportReport,
    Job,
    JobKind,
    JobState,
    LabelerProgress,
    LabelingPair,
    LabelingQueue,
    LogLine,
    MetricPoint,
    PreferenceRow,
    QueueProgress,
    RejectedRow,
    Snapshot,
    UseCaseStats,
    Verdict,
    VersionStats,
    VertexRow,
    Vote,
    WinRate,
    new_completion_id,
)
from core.store.store import Store

__all__ = [
    "Agreement",
    "Choice",
    "Completion",
    "Database",
    "Feedback",
    "FeedbackCreate",
    "FeedbackFormat",
    "FeedbackSource",
    "FeedbackStats",
    "ImportLimits",
    "ImportReport",
    "Job",
    "JobKind",
    "JobState",
    "LabelerProgress",
    "LabelingPair",
    "LabelingQueue",
    "LogLine",
    "MetricPoint",
    "PreferenceRow",
    "QueueProgress",
    "RejectedRow",
    "Snapshot",
    "Store",
    "UseCaseStats",
    "VersionStats",
    "Verdict",
    "VertexRow",
    "Vote",
    "WinRate",
    "current_revision",
    "head_revision",
    "new_completion_id",
    "open_database",
    "upgrade",
]
