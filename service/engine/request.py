"""A generation request inside the engine, and the events it streams back to its caller."""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal

import torch

from core.names import AdapterVersion
from service.engine.sampling import SamplingParams, TokenLogprobs
from service.engine.text import IncrementalDecoder, StopMatcher

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TokenEvent:
    """One generated token. ``text`` is the text it adds (may be empty while a character or a
    possible stop string is incomplete). The last event has ``finish_reason`` and ``usage``.
    ``version`` is the adapter version that served the request (``name@3``), None for the base.
    ``prompt_logprobs`` (first event, when the params ask): one entry per prompt token after the
    first, its log-probability given the tokens before it."""

    token_id: int
    text: str
    logprob: float | None = None
    top_logprobs: dict[int, float] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    version: AdapterVersion | None = None
    index: int = 0  # which of the request's n choices this token belongs to
    prompt_logprobs: list[TokenLogprobs] | None = None


@dataclass(frozen=True)
class GenerationResult:
    """One choice's whole generation, for callers that do not stream."""

    text: str
    token_ids: list[int]
    logprobs: list[float] | None
    top_logprobs: list[dict[int, float]] | None
    finish_reason: FinishReason
    usage: Usage
    version: AdapterVersion | None
    index: int = 0


Event = TokenEvent | BaseException


@dataclass(frozen=True, eq=False)
class EventSink:
    """A request's events go to an asyncio queue on the caller's event loop."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event]

    def put(self, event: Event) -> None:
        deliver([(self, event)])


def deliver(items: Iterable[tuple[EventSink, Event]]) -> None:
    """Hand events to their loops from any thread: one wake-up per loop, not per event."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Event], Event]]] = {}
    for sink, event in items:
        by_loop.setdefault(sink.loop, []).append((sink.queue, event))
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, batch)
        except RuntimeError:  # the caller's loop is closed: nobody is listening
            pass


def _put_all(batch: list[tuple[asyncio.Queue[Event], Event]]) -> None:
    for queue, event in batch:
        queue.put_nowait(event)


class State(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    RUNNING = "running"
    DONE = "done"


_ids = itertools.count(1)


@dataclass(eq=False)
class Request:
    """Engine-side state of one generation (one choice, one batch row). Its events
    (TokenEvent, or an exception) go to ``sink``; ``cancelled`` may be set from any thread.

    The n choices of one call share a sink: the first (``index`` 0) waits in the queue and
    carries the others in ``siblings``; all are admitted together and share one prefill."""

    prompt: list[int]
    params: SamplingParams
    version: AdapterVersion | None  # its adapter's version; None: the base model
    sink: EventSink
    generator: torch.Generator
    decoder: IncrementalDecoder
    stops: StopMatcher
    id: int = field(default_factory=lambda: next(_ids))
    output: list[int] = field(default_factory=list)
    slot: int = 0
    state: State = State.WAITING
    cancelled: bool = False
    arrived: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    # Its adapter reference, taken when admission first reaches it (a waiting request holds
    # only the version): done once the weights are in host memory. None: nothing held.
    acquired: Future | None = None
    slot_wait_since: float | None = None  # when it first found every slot busy
    index: int = 0
    siblings: list[Request] = field(default_factory=list)
    row: int | None = None  # its KV-cache row, from admission to its end
    prompt_logprobs: list[TokenLogprobs] | None = None  # filled by the prefill when asked

    @property
    def choices(self) -> list[Request]:
        """This request and its siblings, by index."""
        return [self, *self.siblings]
