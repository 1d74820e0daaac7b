"""Labeling queues: pairs of logged completions that people compare, and their raw votes.

A vote is stored twice, on purpose: as a plain feedback record (choice 0, 1 or tie, with the
completion ids), so it feeds snapshots and win rates like ``POST /v1/feedback``; and as a raw
vote (verdict incl. "both bad" and skips, which side each completion was shown on, time taken,
rationale), which agreement metrics and audits of position bias need. "Both bad" is a tie in
the feedback record (as LMSYS and AutoArena store it), with the verdict in its metadata.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidRequest, NotFound
from core.names import AdapterVersion
from core.store.completions import prompts_and_texts, stored_version, to_completion
from core.store.db import Database
from core.store.models import (
    CompletionRow,
    FeedbackRow,
    LabelingPairRow,
    LabelingQueueRow,
    LabelingVoteRow,
    utcnow,
)
from core.store.records import (
    Agreement,
    FeedbackCreate,
    LabelerProgress,
    LabelingPair,
    LabelingQueue,
    QueueProgress,
    Verdict,
    Vote,
)
from core.store.stats import cohen_kappa
from core.store.validation import check_text, check_use_case, validate_feedback

VERDICTS: tuple[Verdict, ...] = ("0", "1", "tie", "both_bad", "skip")
FEEDBACK_CHOICE = {"0": 0, "1": 1, "tie": "tie", "both_bad": "tie"}
MAX_OVERLAP = 10
MAX_GUIDELINES_CHARS = 20_000
MAX_RATIONALE_CHARS = 2_000
LOG_SCAN_ROWS = 5_000  # newest logged completions searched for pairs in one fill


class Labeling:
    """Queues, pairs and votes. Built by ``Store``; thread-safe."""

    def __init__(self, database: Database):
        self._db = database

    # --- queues ---

    def create_queue(
        self, use_case: str, name: str = "", guidelines: str = "", overlap: int = 1,
        created_by: str | None = None,
    ) -> LabelingQueue:
        """A new, empty queue; ``overlap`` is how many labelers should vote on each pair."""
        check_use_case(use_case)
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 1 <= overlap <= MAX_OVERLAP:
            raise InvalidRequest(f"overlap: must be an integer from 1 to {MAX_OVERLAP}", param="overlap")
        if guidelines:
            check_text(guidelines, "guidelines", MAX_GUIDELINES_CHARS)
        row = LabelingQueueRow(
            id=f"lq-{uuid.uuid4().hex[:16]}", use_case=use_case, name=name[:256] or use_case,
            guidelines=guidelines, overlap=overlap, created_by=created_by, created_at=utcnow(),
        )
        with self._db.write() as session:
            session.add(row)
        return to_queue(row)

    def queue(self, queue_id: str) -> LabelingQueue:
        with self._db.read() as session:
            return to_queue(_queue(session, queue_id))

    def queues(self, use_case: str | None = None) -> list[LabelingQueue]:
        """Queues, newest first."""
        statement = select(LabelingQueueRow).order_by(LabelingQueueRow.created_at.desc())
        if use_case is not None:
            statement = statement.where(LabelingQueueRow.use_case == check_use_case(use_case))
        with self._db.read() as session:
            return [to_queue(row) for row in session.scalars(statement)]

    # --- pairs ---

    def add_pairs(self, queue_id: str, pairs: Iterable[tuple[str, str]]) -> int:
        """Add pairs of logged completion ids; returns how many were new.

        Both completions must exist and answer the same prompt; a pair already queued is skipped.
        """
        pairs = list(pairs)
        ids = {i for pair in pairs for i in pair}
        now = utcnow()
        with self._db.write() as session:
            _queue(session, queue_id)
            known = prompts_and_texts(session, ids)
            for first, second in pairs:
                for completion_id in (first, second):
                    if completion_id not in known:
                        raise InvalidRequest(f"unknown completion id {completion_id!r}", param="pairs")
                if first == second or known[first][0] != known[second][0]:
                    raise InvalidRequest(
                        f"{first} and {second}: a pair needs two completions of the same prompt",
                        param="pairs",
                    )
            statement = self._db.insert_ignoring_duplicates(LabelingPairRow).returning(LabelingPairRow.id)
            rows = [
                {"queue_id": queue_id, "completion_id_0": a, "completion_id_1": b, "created_at": now}
                for a, b in pairs
            ]
            return len(session.execute(statement, rows).all()) if rows else 0

    def logged_pairs(
        self, queue_id: str, a: AdapterVersion | None, b: AdapterVersion | None, limit: int = 20
    ) -> list[tuple[str, str]]:
        """Up to ``limit`` new pairs from the completion log, newest prompts first: one completion
        of ``a`` and one of ``b`` for the same prompt (two different samples of ``a`` when
        ``b == a``; None is the base model). Completions already in the queue are not used again."""
        versions = [
            and_(CompletionRow.adapter.is_(None), CompletionRow.version.is_(None)) if v is None
            else and_(CompletionRow.adapter == v.adapter, CompletionRow.version == v.version)
            for v in {a, b}
        ]
        p = LabelingPairRow
        used = select(p.completion_id_0).where(p.queue_id == queue_id).union(
            select(p.completion_id_1).where(p.queue_id == queue_id)
        )
        statement = (
            select(CompletionRow)
            .where(or_(*versions), CompletionRow.id.not_in(used))
            .order_by(CompletionRow.created_at.desc())
            .limit(LOG_SCAN_ROWS)
        )
        with self._db.read() as session:
            _queue(session, queue_id)
            by_prompt: dict[str, list[CompletionRow]] = defaultdict(list)
            for row in session.scalars(statement):
                by_prompt[row.prompt].append(row)
        found: list[tuple[str, str]] = []
        for rows in by_prompt.values():
            firsts = [r for r in rows if stored_version(r.adapter, r.version) == a]
            seconds = [r for r in rows if stored_version(r.adapter, r.version) == b]
            pair = next(
                ((x.id, y.id) for x in firsts for y in seconds if x.id != y.id and x.text != y.text),
                None,
            )
            if pair is not None:
                found.append(pair)
            if len(found) == limit:
                break
        return found

    def pair(self, pair_id: int) -> LabelingPair:
        with self._db.read() as session:
            row = session.get(LabelingPairRow, pair_id)
            if row is None:
                raise NotFound(f"no labeling pair with id {pair_id}")
            return _to_pair(session, row)

    def next_pair(self, queue_id: str, labeler: str) -> LabelingPair | None:
        """The oldest pair this labeler has neither voted on nor skipped that still needs votes."""
        p, v = LabelingPairRow, LabelingVoteRow
        mine = select(v.pair_id).where(v.labeler == labeler)
        votes = (
            select(func.count()).where(v.pair_id == p.id, v.verdict != "skip").scalar_subquery()
        )
        with self._db.read() as session:
            overlap = _queue(session, queue_id).overlap
            row = session.scalars(
                select(p)
                .where(p.queue_id == queue_id, p.id.not_in(mine), votes < overlap)
                .order_by(p.id)
                .limit(1)
            ).first()
            return None if row is None else _to_pair(session, row)

    # --- votes ---

    def vote(
        self, pair_id: int, labeler: str, verdict: Verdict, *, swapped: bool,
        time_ms: int | None = None, rationale: str | None = None,
    ) -> Vote:
        """Record ``labeler``'s canonical verdict on a pair, and (unless a skip) a feedback
        record with the pair's completion ids, in one transaction.

        Idempotent per (pair, labeler): the same verdict again returns the stored vote; a
        different one raises Conflict (a vote is final).
        """
        if verdict not in VERDICTS:
            raise InvalidRequest(f"verdict: must be one of {', '.join(VERDICTS)}", param="verdict")
        rationale = (rationale or "").strip() or None
        if rationale is not None:
            check_text(rationale, "rationale", MAX_RATIONALE_CHARS)
        if time_ms is not None and (isinstance(time_ms, bool) or not 0 <= time_ms < 2**31):
            raise InvalidRequest("time_ms: must be a non-negative number of milliseconds", param="time_ms")
        try:
            with self._db.write() as session:
                existing = _find_vote(session, pair_id, labeler)
                if existing is not None:
                    return _replay(existing, verdict)
                return to_vote(self._insert_vote(session, pair_id, labeler, verdict, swapped, time_ms, rationale))
        except IntegrityError:
            # PostgreSQL: the same labeler's concurrent post won between our check and insert.
            with self._db.read() as session:
                existing = _find_vote(session, pair_id, labeler)
                if existing is None:
                    raise
                return _replay(existing, verdict)

    def _insert_vote(
        self, session: Session, pair_id: int, labeler: str, verdict: Verdict, swapped: bool,
        time_ms: int | None, rationale: str | None,
    ) -> LabelingVoteRow:
        pair = session.get(LabelingPairRow, pair_id)
        if pair is None:
            raise NotFound(f"no labeling pair with id {pair_id}")
        now = utcnow()
        feedback_id = None
        if verdict != "skip":
            queue = _queue(session, pair.queue_id)
            ids = (pair.completion_id_0, pair.completion_id_1)
            new = FeedbackCreate(
                use_case=queue.use_case, choice=FEEDBACK_CHOICE[verdict],  # type: ignore[arg-type]
                completion_ids=ids, labeler=labeler, source="human",
                metadata={"labeling": {
                    "queue_id": queue.id, "pair_id": pair.id, "verdict": verdict,
                    # which completion sat on each side: ["1", "0"] means 1 was shown as A
                    "shown": ["1", "0"] if swapped else ["0", "1"],
                    "time_ms": time_ms, "rationale": rationale,
                }},
                idempotency_key=f"labeling:{pair.id}:{hashlib.sha256(labeler.encode()).hexdigest()[:32]}",
            )
            feedback = FeedbackRow(**validate_feedback(new, prompts_and_texts(session, ids)).row_values(now))
            session.add(feedback)
            session.flush()
            feedback_id = feedback.id
        row = LabelingVoteRow(
            pair_id=pair_id, labeler=labeler, verdict=verdict, swapped=swapped, time_ms=time_ms,
            rationale=rationale, feedback_id=feedback_id, created_at=now,
        )
        session.add(row)
        session.flush()
        return row

    def votes(self, queue_id: str) -> list[Vote]:
        """Every raw vote of a queue (skips included), in the order they came."""
        v, p = LabelingVoteRow, LabelingPairRow
        statement = select(v).join(p, p.id == v.pair_id).where(p.queue_id == queue_id).order_by(v.id)
        with self._db.read() as session:
            _queue(session, queue_id)
            return [to_vote(row) for row in session.scalars(statement)]

    # --- progress and agreement ---

    def progress(self, queue_id: str) -> QueueProgress:
        p, v = LabelingPairRow, LabelingVoteRow
        with self._db.read() as session:
            overlap = _queue(session, queue_id).overlap
            counts = (
                select(p.id, func.count(v.id).label("votes"))
                .outerjoin(v, and_(v.pair_id == p.id, v.verdict != "skip"))
                .where(p.queue_id == queue_id)
                .group_by(p.id)
            ).subquery()
            row = session.execute(
                select(
                    func.count(), func.coalesce(func.sum(counts.c.votes), 0),
                    func.coalesce(func.sum(case((counts.c.votes >= overlap, 1), else_=0)), 0),
                ).select_from(counts)
            ).one()
        return QueueProgress(pairs=int(row[0]), votes=int(row[1]), complete=int(row[2]))

    def labeler_progress(self, queue_id: str, labeler: str) -> LabelerProgress:
        """Pairs the labeler has done in the queue, and pairs still open to them."""
        p, v = LabelingPairRow, LabelingVoteRow
        votes = select(func.count()).where(v.pair_id == p.id, v.verdict != "skip").scalar_subquery()
        mine = select(v.pair_id).where(v.labeler == labeler)
        with self._db.read() as session:
            overlap = _queue(session, queue_id).overlap
            done = session.scalar(
                select(func.count()).select_from(v).join(p, p.id == v.pair_id)
                .where(p.queue_id == queue_id, v.labeler == labeler)
            )
            remaining = session.scalar(
                select(func.count()).select_from(p)
                .where(p.queue_id == queue_id, p.id.not_in(mine), votes < overlap)
            )
        return LabelerProgress(done=int(done or 0), remaining=int(remaining or 0))

    def agreement(self, queue_id: str) -> list[Agreement]:
        """Per pair of labelers, on the pairs both voted on (skips excluded): percent agreement
        and Cohen's kappa over the four verdicts."""
        verdicts: dict[str, dict[int, str]] = defaultdict(dict)
        for vote in self.votes(queue_id):
            if vote.verdict != "skip":
                verdicts[vote.labeler][vote.pair_id] = vote.verdict
        results = []
        for first, second in itertools.combinations(sorted(verdicts), 2):
            shared = sorted(verdicts[first].keys() & verdicts[second].keys())
            if not shared:
                continue
            a = [verdicts[first][i] for i in shared]
            b = [verdicts[second][i] for i in shared]
            percent = sum(x == y for x, y in zip(a, b, strict=True)) / len(shared)
            results.append(Agreement(first, second, len(shared), percent, cohen_kappa(a, b)))
        return results


def _queue(session: Session, queue_id: str) -> LabelingQueueRow:
    row = session.get(LabelingQueueRow, queue_id)
    if row is None:
        raise NotFound(f"no labeling queue with id {queue_id!r}")
    return row


def _find_vote(session: Session, pair_id: int, labeler: str) -> LabelingVoteRow | None:
    v = LabelingVoteRow
    return session.scalar(select(v).where(v.pair_id == pair_id, v.labeler == labeler))


def _replay(existing: LabelingVoteRow, verdict: Verdict) -> Vote:
    if existing.verdict != verdict:
        raise Conflict(
            f"{existing.labeler} already answered pair {existing.pair_id} with "
            f"{existing.verdict!r}; a vote is final"
        )
    return to_vote(existing)


def _to_pair(session: Session, row: LabelingPairRow) -> LabelingPair:
    first = session.get_one(CompletionRow, row.completion_id_0)
    second = session.get_one(CompletionRow, row.completion_id_1)
    return LabelingPair(
        id=row.id, queue_id=row.queue_id, prompt=first.prompt,
        completions=(to_completion(first), to_completion(second)),
    )


def to_queue(row: LabelingQueueRow) -> LabelingQueue:
    return LabelingQueue(
        id=row.id, use_case=row.use_case, name=row.name, guidelines=row.guidelines,
        overlap=row.overlap, created_by=row.created_by, created_at=row.created_at,
    )


def to_vote(row: LabelingVoteRow) -> Vote:
    return Vote(
        id=row.id, pair_id=row.pair_id, labeler=row.labeler, verdict=row.verdict,  # type: ignore[arg-type]
        swapped=row.swapped, time_ms=row.time_ms, rationale=row.rationale,
        feedback_id=row.feedback_id, created_at=row.created_at,
    )
