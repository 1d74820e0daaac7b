"""The feedback API's logic on the store: records, imports, exports, snapshots and stats."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import asdict
from typing import BinaryIO

from core.errors import InvalidRequest
from core.names import model_name, parse_version
from core.settings import Settings
from core.store import (
    Feedback,
    FeedbackCreate,
    ImportLimits,
    PreferenceRow,
    Snapshot,
    Store,
    VertexRow,
)
from core.store.records import FeedbackFormat
from service.completion_log import CompletionLogWriter
from service.feedback.protocol import (
    FeedbackCreateRequest,
    FeedbackPublic,
    FeedbackStatsPublic,
    ImportReportPublic,
    SnapshotPublic,
    UseCaseStatsPublic,
    VersionStatsPublic,
    WinRatePublic,
)


def feedback_public(f: Feedback) -> FeedbackPublic:
    return FeedbackPublic(
        id=f.id, use_case=f.use_case, prompt=f.prompt, candidates=list(f.candidates),
        completion_ids=list(f.completion_ids), choice=f.choice, labeler=f.labeler,
        source=f.source.value, metadata=f.metadata, created_at=f.created_at,
    )


def snapshot_public(s: Snapshot) -> SnapshotPublic:
    return SnapshotPublic(id=s.id, use_case=s.use_case, row_count=s.row_count, sha256=s.sha256, created_at=s.created_at)


def import_limits(settings: Settings) -> ImportLimits:
    """What an uploaded import may expand to (``max_import_bytes`` is checked as it arrives)."""
    return ImportLimits(
        max_decompressed_bytes=settings.max_import_decompressed_bytes,
        max_line_bytes=settings.max_import_line_bytes,
    )


class FeedbackService:
    """Blocking calls (database I/O) but ``add``: the router runs them in a worker thread."""

    def __init__(
        self, store: Store, completion_log: CompletionLogWriter | None,
        import_limits: ImportLimits = ImportLimits(),
    ):
        self.store = store
        self.completion_log = completion_log
        self.import_limits = import_limits

    async def add(self, body: FeedbackCreateRequest, idempotency_key: str | None, caller: str) -> FeedbackPublic:
        """Store one record; returns once it is durable. Runs on the event loop: the store's
        group commit writes it (core/store/group_commit.py) while no thread waits for it."""
        if body.completion_ids and self.completion_log is not None:
            # A completion served a moment ago may still sit in the log writer's queue: wait
            # for those named here, not for the whole queue (busy under steady traffic).
            ids = [i for i in body.completion_ids if isinstance(i, str)]
            await asyncio.to_thread(self.completion_log.wait_for, ids)
        new = FeedbackCreate(
            use_case=body.use_case, choice=body.choice, prompt=body.prompt,
            candidates=tuple(body.candidates) if body.candidates else None,
            completion_ids=tuple(body.completion_ids) if body.completion_ids else None,
            labeler=body.labeler or caller, source=body.source, metadata=body.metadata,
            idempotency_key=idempotency_key,
        )
        return feedback_public(await asyncio.wrap_future(self.store.feedback.submit(new)))

    def import_file(
        self, file: BinaryIO, use_case: str, fmt: FeedbackFormat | None, labeler: str,
        source: str, idempotency_key: str | None,
    ) -> ImportReportPublic:
        report = self.store.feedback.import_jsonl(
            file, use_case=use_case, fmt=fmt, labeler=labeler, source=source, idempotency_key=idempotency_key,
            limits=self.import_limits,
        )
        return ImportReportPublic.model_validate(asdict(report))

    def export(self, use_case: str, fmt: FeedbackFormat, include_ties: bool) -> Iterator[VertexRow | PreferenceRow]:
        return self.store.feedback.export(use_case, fmt, include_ties=include_ties)

    def create_snapshot(self, use_case: str) -> SnapshotPublic:
        return snapshot_public(self.store.snapshots.create(use_case))

    def snapshots(self, use_case: str | None) -> list[SnapshotPublic]:
        """Newest first."""
        return [snapshot_public(s) for s in self.store.snapshots.list(use_case)]

    def snapshot(self, snapshot_id: str) -> SnapshotPublic:
        return snapshot_public(self.store.snapshots.get(snapshot_id))

    def stats(self, use_case: str | None, a: str | None, b: str | None) -> FeedbackStatsPublic:
        if (a is None) != (b is None):
            raise InvalidRequest("give both a and b to compare two versions", param="b" if a else "a")
        summary = self.store.stats.summary(use_case)
        head_to_head = None
        if a is not None and b is not None:
            rate = self.store.stats.win_rate(parse_version(a, "a"), parse_version(b, "b"), use_case)
            head_to_head = WinRatePublic(
                a=model_name(rate.a), b=model_name(rate.b), wins=rate.wins, losses=rate.losses, ties=rate.ties,
                total=rate.total, win_rate=rate.win_rate,
            )
        return FeedbackStatsPublic(
            use_cases=[UseCaseStatsPublic.model_validate(asdict(u)) for u in summary.use_cases],
            versions=[
                VersionStatsPublic(version=model_name(v.version), model=model_name(v.version), candidates=v.candidates, wins=v.wins,
                                   losses=v.losses, ties=v.ties)
                for v in summary.versions
            ],
            head_to_head=head_to_head,
        )
