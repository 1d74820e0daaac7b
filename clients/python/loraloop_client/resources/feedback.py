"""Feedback: post pairwise preferences, import and export preference files, freeze
snapshots for training, and read counts and win rates."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from loraloop_client._base import new_idempotency_key
from loraloop_client._models import Model, RequestModel

if TYPE_CHECKING:
    from loraloop_client._base import AsyncCore, SyncCore

Choice = Literal[0, 1, "tie"]
Format = Literal["vertex", "trl"]


class FeedbackCreate(RequestModel):
    component = "FeedbackCreateRequest"
    use_case: str
    completion_ids: list[str] | None = None
    prompt: str | None = None
    candidates: list[str] | None = None
    choice: Choice
    labeler: str | None = None
    source: Literal["human", "model"] = "human"
    metadata: dict[str, Any] = {}


class Feedback(Model):
    component = "FeedbackPublic"
    id: int
    use_case: str
    prompt: str
    candidates: list[str]
    completion_ids: list[str | None]
    choice: Choice
    labeler: str | None = None
    source: Literal["human", "model"]
    metadata: dict[str, Any] = {}
    created_at: datetime


class RejectedRow(Model):
    component = "RejectedRowPublic"
    line: int
    reason: str


class ImportReport(Model):
    component = "ImportReportPublic"
    format: Format
    accepted: int
    duplicates: int
    rejected_count: int
    rejected: list[RejectedRow]


class SnapshotCreate(RequestModel):
    component = "SnapshotCreate"
    use_case: str


class Snapshot(Model):
    component = "SnapshotPublic"
    id: str
    use_case: str
    row_count: int
    sha256: str
    created_at: datetime


class SnapshotList(Model):
    component = "SnapshotList"
    data: list[Snapshot]


class UseCaseStats(Model):
    component = "UseCaseStatsPublic"
    use_case: str
    feedback: int
    choice_0: int
    choice_1: int
    ties: int
    human: int
    model: int


class VersionStats(Model):
    component = "VersionStatsPublic"
    version: str  # name@N, or base
    model: str  # the same as version (its first name)
    candidates: int
    wins: int
    losses: int
    ties: int


class WinRate(Model):
    component = "WinRatePublic"
    a: str
    b: str
    wins: int
    losses: int
    ties: int
    total: int
    win_rate: float | None


class FeedbackStats(Model):
    component = "FeedbackStatsPublic"
    use_cases: list[UseCaseStats]
    versions: list[VersionStats]
    head_to_head: WinRate | None = None


def _post_args(
    use_case: str, choice: Choice, prompt: str | None, candidates: list[str] | None,
    completion_ids: list[str] | None, labeler: str | None, source: str, metadata: dict[str, Any] | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    body = FeedbackCreate(
        use_case=use_case, choice=choice, prompt=prompt, candidates=candidates,
        completion_ids=completion_ids, labeler=labeler, source=source, metadata=metadata or {},
    ).model_dump(exclude_none=True)
    return {"json": body, "headers": {"Idempotency-Key": idempotency_key or new_idempotency_key()}}


def _import_params(use_case: str, format: Format | None, source: str) -> dict[str, Any]:
    return {"use_case": use_case, "format": format, "source": source}


def _open(file: str | Path | BinaryIO) -> tuple[BinaryIO, bool]:
    if isinstance(file, (str, Path)):
        return Path(file).open("rb"), True
    return file, False


class FeedbackResource:
    """``client.feedback``."""

    def __init__(self, core: SyncCore) -> None:
        self._core = core

    def post(
        self, use_case: str, choice: Choice, *, prompt: str | None = None,
        candidates: list[str] | None = None, completion_ids: list[str] | None = None,
        labeler: str | None = None, source: Literal["human", "model"] = "human",
        metadata: dict[str, Any] | None = None, idempotency_key: str | None = None,
    ) -> Feedback:
        """Record a preference: ``prompt`` and two ``candidates``, or two logged
        ``completion_ids``; ``choice`` 0, 1 or "tie". One Idempotency-Key (yours, or one made
        here) covers every retry, so the preference counts once."""
        args = _post_args(use_case, choice, prompt, candidates, completion_ids, labeler, source,
                          metadata, idempotency_key)
        return Feedback.model_validate(self._core.request("POST", "/v1/feedback", **args).json())

    def import_file(
        self, file: str | Path | BinaryIO, use_case: str, *, format: Format | None = None,
        source: Literal["human", "model"] = "human", idempotency_key: str | None = None,
    ) -> ImportReport:
        """Import a JSONL file (plain or gzip, Vertex or TRL rows) in one transaction."""
        handle, owned = _open(file)
        try:
            name = Path(getattr(handle, "name", "feedback.jsonl")).name
            response = self._core.request(
                "POST", "/v1/feedback/import", params=_import_params(use_case, format, source),
                files=[("file", (name, handle))],
                headers={"Idempotency-Key": idempotency_key or new_idempotency_key()},
            )
        finally:
            if owned:
                handle.close()
        return ImportReport.model_validate(response.json())

    def export(self, use_case: str, *, format: Format = "vertex", include_ties: bool = False) -> Iterator[dict[str, Any]]:
        """The use case's preferences, one dict per row, streamed as they arrive."""
        params = {"use_case": use_case, "format": format, "include_ties": include_ties}
        with self._core.stream("GET", "/v1/feedback/export", params=params) as response:
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def create_snapshot(self, use_case: str) -> Snapshot:
        """Freeze the use case's current preferences (ties excluded) for training."""
        body = SnapshotCreate(use_case=use_case).model_dump()
        return Snapshot.model_validate(
            self._core.request("POST", "/v1/feedback/snapshots", json=body, safe=False).json()
        )

    def list_snapshots(self, use_case: str | None = None) -> list[Snapshot]:
        response = self._core.request("GET", "/v1/feedback/snapshots", params={"use_case": use_case})
        return SnapshotList.model_validate(response.json()).data

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        return Snapshot.model_validate(self._core.request("GET", f"/v1/feedback/snapshots/{snapshot_id}").json())

    def stats(self, use_case: str | None = None, *, a: str | None = None, b: str | None = None) -> FeedbackStats:
        """Counts per use case and adapter version; with ``a`` and ``b`` (``name@N`` or
        ``base``) the head-to-head win rate of a over b."""
        params = {"use_case": use_case, "a": a, "b": b}
        return FeedbackStats.model_validate(self._core.request("GET", "/v1/feedback/stats", params=params).json())


class AsyncFeedbackResource:
    """``async_client.feedback``: the same calls as :class:`FeedbackResource`, awaited."""

    def __init__(self, core: AsyncCore) -> None:
        self._core = core

    async def post(
        self, use_case: str, choice: Choice, *, prompt: str | None = None,
        candidates: list[str] | None = None, completion_ids: list[str] | None = None,
        labeler: str | None = None, source: Literal["human", "model"] = "human",
        metadata: dict[str, Any] | None = None, idempotency_key: str | None = None,
    ) -> Feedback:
        args = _post_args(use_case, choice, prompt, candidates, completion_ids, labeler, source,
                          metadata, idempotency_key)
        return Feedback.model_validate((await self._core.request("POST", "/v1/feedback", **args)).json())

    async def import_file(
        self, file: str | Path | BinaryIO, use_case: str, *, format: Format | None = None,
        source: Literal["human", "model"] = "human", idempotency_key: str | None = None,
    ) -> ImportReport:
        handle, owned = _open(file)
        try:
            name = Path(getattr(handle, "name", "feedback.jsonl")).name
            response = await self._core.request(
                "POST", "/v1/feedback/import", params=_import_params(use_case, format, source),
                files=[("file", (name, handle))],
                headers={"Idempotency-Key": idempotency_key or new_idempotency_key()},
            )
        finally:
            if owned:
                handle.close()
        return ImportReport.model_validate(response.json())

    async def export(
        self, use_case: str, *, format: Format = "vertex", include_ties: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        params = {"use_case": use_case, "format": format, "include_ties": include_ties}
        async with self._core.stream("GET", "/v1/feedback/export", params=params) as response:
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)

    async def create_snapshot(self, use_case: str) -> Snapshot:
        body = SnapshotCreate(use_case=use_case).model_dump()
        response = await self._core.request("POST", "/v1/feedback/snapshots", json=body, safe=False)
        return Snapshot.model_validate(response.json())

    async def list_snapshots(self, use_case: str | None = None) -> list[Snapshot]:
        response = await self._core.request("GET", "/v1/feedback/snapshots", params={"use_case": use_case})
        return SnapshotList.model_validate(response.json()).data

    async def get_snapshot(self, snapshot_id: str) -> Snapshot:
        response = await self._core.request("GET", f"/v1/feedback/snapshots/{snapshot_id}")
        return Snapshot.model_validate(response.json())

    async def stats(
        self, use_case: str | None = None, *, a: str | None = None, b: str | None = None
    ) -> FeedbackStats:
        params = {"use_case": use_case, "a": a, "b": b}
        response = await self._core.request("GET", "/v1/feedback/stats", params=params)
        return FeedbackStats.model_validate(response.json())
