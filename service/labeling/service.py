"""Labeling queues on the store: fill them (from the completion log or generated on demand),
show each labeler their next pair with randomised sides, and turn shown-side votes into
canonical ones.

Sides: whether completion 1 is shown as "A" is a keyed hash of (labeler, pair), so a reload
shows the same sides and no labeler can predict them; fills also shuffle the canonical order,
so completion 0 is not always production. The page sends what was *shown* ("A", "B", ...);
only this service knows the mapping and stores the canonical verdict plus the sides.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core.errors import InvalidRequest
from core.names import model_name
from core.registry import Registry
from core.store import LabelingQueue, Store, Verdict, Vote
from service.completion_log import CompletionLogWriter
from service.labeling.protocol import (
    AgreementPublic,
    FillReport,
    QueueCreate,
    QueueFill,
    QueueProgressPublic,
    QueuePublic,
    VotePublic,
)
from service.versions import fixed_version

ShownChoice = str  # "A", "B", "tie", "both_bad" or "skip"
SHOWN_CHOICES = ("A", "B", "tie", "both_bad", "skip")

# A keyed hash of its arguments: stable for the server's secret, unpredictable without it
# (the pages' session key, ``Sessions.seed``); it decides which side a labeler sees first.
KeyedHash = Callable[..., bytes]


class Sampler(Protocol):
    """Generates logged completions (``OpenAIService.sample``): ``n`` of ``prompt`` by
    ``model`` from one request, as (completion id, text) in choice order."""

    async def __call__(
        self, model: str, prompt: str, *, n: int, max_tokens: int, temperature: float, seed: int
    ) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class LabelItem:
    """A pair as one labeler sees it: sides applied, no model names."""

    queue: LabelingQueue
    pair_id: int
    prompt: str
    a: str
    b: str
    position: int  # n of N
    total: int
    shown_at_ms: int


@dataclass(frozen=True)
class Reveal:
    """Shown after a vote, as the arena does: which model wrote A and B."""

    choice: ShownChoice
    a: str
    b: str


def vote_public(v: Vote) -> VotePublic:
    return VotePublic(
        id=v.id, pair_id=v.pair_id, labeler=v.labeler, verdict=v.verdict,
        shown=["1", "0"] if v.swapped else ["0", "1"], time_ms=v.time_ms, rationale=v.rationale,
        feedback_id=v.feedback_id, created_at=v.created_at,
    )


class LabelingService:
    """Blocking methods do database I/O (run them in a thread); ``fill_generated`` is async."""

    def __init__(
        self, store: Store, registry: Registry, sample: Sampler,
        completion_log: CompletionLogWriter | None, keyed_hash: KeyedHash,
    ):
        self.store = store
        self.registry = registry
        self.sample = sample
        self.completion_log = completion_log
        self.keyed_hash = keyed_hash

    # --- queues ---

    def create_queue(self, body: QueueCreate, caller: str) -> QueuePublic:
        queue = self.store.labeling.create_queue(
            body.use_case, body.name, body.guidelines, body.overlap, created_by=caller
        )
        return self.describe(queue.id)

    def describe(self, queue_id: str) -> QueuePublic:
        labeling = self.store.labeling
        q = labeling.queue(queue_id)
        progress = labeling.progress(queue_id)
        return QueuePublic(
            id=q.id, use_case=q.use_case, name=q.name, guidelines=q.guidelines, overlap=q.overlap,
            created_by=q.created_by, created_at=q.created_at,
            progress=QueueProgressPublic(pairs=progress.pairs, votes=progress.votes, complete=progress.complete),
            agreement=[
                AgreementPublic(labeler_a=g.labeler_a, labeler_b=g.labeler_b, pairs=g.pairs,
                                percent=g.percent, kappa=g.kappa)
                for g in labeling.agreement(queue_id)
            ],
        )

    def queues(self, use_case: str | None = None) -> list[QueuePublic]:
        return [self.describe(q.id) for q in self.store.labeling.queues(use_case)]

    def votes(self, queue_id: str) -> list[VotePublic]:
        return [vote_public(v) for v in self.store.labeling.votes(queue_id)]

    # --- filling ---

    def fill_from_log(self, queue_id: str, body: QueueFill) -> FillReport:
        a = fixed_version(self.registry, body.a, "a")
        b = fixed_version(self.registry, body.b, "b") if body.b else a  # no b: two samples of a
        pairs = [_shuffled(p) for p in self.store.labeling.logged_pairs(queue_id, a, b, body.limit)]
        return FillReport(added=self.store.labeling.add_pairs(queue_id, pairs))

    async def fill_generated(self, queue_id: str, body: QueueFill) -> FillReport:
        """Generate a pair per prompt through the engine and queue it: two samples of ``a`` from
        one ``n=2`` request (one prefill), or one completion of ``a`` and one of ``b``."""
        if self.completion_log is None:
            raise InvalidRequest(
                "generated pairs need the completion log: set LORALOOP_LOG_COMPLETIONS=true",
                param="source",
            )
        if not body.prompts:
            raise InvalidRequest("prompts: give at least one prompt to generate pairs for", param="prompts")
        await asyncio.to_thread(self.store.labeling.queue, queue_id)  # NotFound before generating
        pairs, skipped = [], 0
        for n, prompt in enumerate(body.prompts):
            if body.b:
                choices = [(await self._choices(model, prompt, body, seed=1000 * n + side, n=1))[0]
                           for side, model in enumerate((body.a, body.b))]
            else:
                choices = await self._choices(body.a, prompt, body, seed=1000 * n, n=2)
            (first_id, first_text), (second_id, second_text) = choices
            if first_text == second_text:
                skipped += 1  # nothing to compare (greedy, or the same sample twice)
                continue
            pairs.append(_shuffled((first_id, second_id)))
        await asyncio.to_thread(self.completion_log.wait_for, [i for p in pairs for i in p])
        added = await asyncio.to_thread(self.store.labeling.add_pairs, queue_id, pairs)
        return FillReport(added=added, skipped=skipped)

    async def _choices(
        self, model: str, prompt: str, body: QueueFill, seed: int, n: int
    ) -> list[tuple[str, str]]:
        """``n`` logged completions of ``prompt`` by ``model``: (completion id, text) each."""
        return await self.sample(
            model, prompt, n=n, max_tokens=body.max_tokens, temperature=body.temperature, seed=seed
        )

    # --- labeling ---

    def swapped(self, labeler: str, pair_id: int) -> bool:
        """Whether completion 1 is shown as A to this labeler: stable, unpredictable."""
        return bool(self.keyed_hash("sides", labeler, pair_id)[0] & 1)

    def next_item(self, queue_id: str, labeler: str) -> tuple[LabelingQueue, LabelItem | None]:
        labeling = self.store.labeling
        queue = labeling.queue(queue_id)
        pair = labeling.next_pair(queue_id, labeler)
        if pair is None:
            return queue, None
        progress = labeling.labeler_progress(queue_id, labeler)
        first, second = (c.text for c in pair.completions)
        a, b = (second, first) if self.swapped(labeler, pair.id) else (first, second)
        return queue, LabelItem(
            queue=queue, pair_id=pair.id, prompt=pair.prompt, a=a, b=b,
            position=progress.done + 1, total=progress.done + progress.remaining,
            shown_at_ms=int(time.time() * 1000),
        )

    def vote(
        self, queue_id: str, labeler: str, pair_id: int, choice: ShownChoice,
        shown_at_ms: int | None, rationale: str | None,
    ) -> Reveal:
        """Store a vote given as shown (A/B/tie/both_bad/skip); idempotent per labeler and pair."""
        if choice not in SHOWN_CHOICES:
            raise InvalidRequest(f"choice: must be one of {', '.join(SHOWN_CHOICES)}", param="choice")
        pair = self.store.labeling.pair(pair_id)
        if pair.queue_id != queue_id:
            raise InvalidRequest(f"pair {pair_id} is not in queue {queue_id}", param="pair_id")
        swapped = self.swapped(labeler, pair_id)
        verdict: Verdict = canonical(choice, swapped)
        time_ms = None
        if shown_at_ms is not None:
            time_ms = max(0, min(int(time.time() * 1000) - shown_at_ms, 2**31 - 1))
        self.store.labeling.vote(
            pair_id, labeler, verdict, swapped=swapped, time_ms=time_ms, rationale=rationale
        )
        first, second = (model_name(c.version) for c in pair.completions)
        a, b = (second, first) if swapped else (first, second)
        return Reveal(choice=choice, a=a, b=b)


def canonical(choice: ShownChoice, swapped: bool) -> Verdict:
    """The verdict on completions 0/1 from the choice between the shown sides A/B."""
    if choice == "A":
        return "1" if swapped else "0"
    if choice == "B":
        return "0" if swapped else "1"
    return choice  # type: ignore[return-value]  # tie, both_bad, skip: side-free


def _shuffled(pair: tuple[str, str]) -> tuple[str, str]:
    # The canonical order carries no meaning (not always production first).
    return pair if random.random() < 0.5 else (pair[1], pair[0])
