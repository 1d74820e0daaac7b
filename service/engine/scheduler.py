"""Continuous batching: requests join and leave the running batch at token boundaries.

One ``step`` (on the engine thread) is:

1. run queued commands (slot placement for admin calls), drop cancelled rows;
2. admit waiting requests into a prefill group (FIFO) while the KV cache has free rows
   (``max_batch_size``; a call for n choices needs n rows at once); an idle engine first
   lets a burst of arrivals land (until they pause 5 ms with none on its way, or fill the
   free rows) so that it starts as one batch. A waiting request holds only its adapter's
   version; it takes a reference (which loads the weights into host memory) when admission
   first reaches it. A request whose adapter is still loading, or cannot get a slot yet,
   lets the next one pass, until it has waited SLOT_WAIT_LIMIT for a slot: then nobody
   overtakes it, so the rows on resident adapters drain and free a slot for it;
3. run ONE forward pass (``_forward``) that carries both the prefill group's next chunk of at
   most ``prefill_chunk_tokens`` tokens and one decode token for every running row. Packing
   them into one pass means a newcomer's prompt costs no pass of its own (each pass reads every
   weight once, which dominates a decode step), and the chunk bound keeps the running rows'
   step short (when nothing runs, up to IDLE_PREFILL_TOKENS go in one chunk: there is nobody to
   stall). A reward-scoring chunk, when no prompt is being prefilled, runs as a pass of its own;
4. emit: the running rows' tokens, rows that finished (EOS, stop string, max tokens) handing
   their cache rows back; and when the group's prompts are complete, their first tokens, their
   rows joining the decode batch for the next step. Cache rows never move.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from service.engine.adapters import AdapterManager
from service.engine.batch import DecodeBatch, PositionsSink, PrefillGroup, compaction
from service.engine.decoder import Decoder, Part
from service.engine.kv_cache import KVCache
from service.engine.lora import BatchRows, GatheredRows, LoraModel, Parts
from service.engine.request import (
    Event,
    EventSink,
    FinishReason,
    Request,
    State,
    TokenEvent,
    Usage,
    deliver,
)
from service.engine.reward import ScoreRequest, score_rows
from service.engine.sampling import (
    TokenLogprobs,
    choose_tokens,
    position_logprobs,
    process_logits,
    token_logprobs,
)

log = logging.getLogger(__name__)

# With no running rows a prefill stalls nobody: admit and process up to this many prompt tokens
# at once (one big forward is the most efficient), still bounded for the attention's memory.
IDLE_PREFILL_TOKENS = 8192
# An idle engine waits before its first prefill until arrivals pause for BURST_GAP and no
# request is on its way (``arriving``), or until the arrivals fill its free rows, at most
# BURST_MAX_WAIT, so that a burst of requests shares one prefill and starts as one batch. Over
# HTTP a burst does not arrive at once: each request is parsed, templated and tokenized first
# (32 chat requests reached the engine over 57-117 ms on 2 cores, 2-4 ms apart). With a 1 ms
# gap and no count of requests on their way, the engine started on the first one or two and
# the rest joined over six more passes, 5 prompts per chunk: 38 passes instead of 32, 0.82x the
# tokens/s of the same requests submitted at once (docs/performance.md). A lone request pays
# the gap once: 5 ms of its time to first token.
BURST_GAP = 0.005
BURST_MAX_WAIT = 0.25
# A request whose adapter is loaded but finds every slot in use lets later requests pass for
# at most this long; then admission is first come, first served until it has its slot.
SLOT_WAIT_LIMIT = 1.0


class Scheduler:
    def __init__(
        self,
        model: PreTrainedModel,
        lora: LoraModel,
        adapters: AdapterManager,
        decoder: Decoder,
        cache: KVCache,
        *,
        prefill_chunk_tokens: int,
        eos_ids: set[int],
        pad_id: int,
        wake: Callable[[], None] = lambda: None,
    ):
        self.model = model
        self.decoder = decoder
        self.lora = lora
        self.adapters = adapters
        self.cache = cache
        self.budget = prefill_chunk_tokens
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.wake = wake  # wakes the engine loop (an adapter load finished)
        self.device = lora.device
        self._lock = threading.Lock()  # guards waiting and score_requests (other threads submit)
        self.waiting: deque[Request] = deque()
        self.on_the_way = 0  # requests being prepared for submit (see ``arriving``)
        self.score_requests: deque[ScoreRequest] = deque()
        self.commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.prefill: tuple[PrefillGroup, list[Request]] | None = None
        self.batch = DecodeBatch(cache)
        self.rows = lora.batch_rows(cache.rows)
        self.running: list[Request] = []  # in batch order; each holds its cache row
        self.steps = 0
        # Counters for metrics (read from other threads; ints, so reads are atomic enough).
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.finished: dict[str, int] = {"stop": 0, "length": 0, "cancelled": 0, "error": 0}
        self._outbox: list[tuple[EventSink, Event]] = []  # delivered once per step

    # --- any thread ---

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Count a request on its way here (its chat template, tokens and adapter being
        prepared) until it is submitted or fails: an idle engine waits for such a burst."""
        with self._lock:
            self.on_the_way += 1
        try:
            yield
        finally:
            with self._lock:
                self.on_the_way -= 1

    def submit(self, request: Request) -> None:
        with self._lock:
            self.waiting.append(request)

    def submit_score(self, score: ScoreRequest) -> None:
        with self._lock:
            self.score_requests.append(score)

    def cancel(self, request: Request) -> None:
        """Mark ``request`` cancelled; a waiting one leaves now, a running one at the next step."""
        request.cancelled = True
        with self._lock:
            if request.state is State.WAITING and request in self.waiting:
                self.waiting.remove(request)
                for choice in request.choices:
                    self._finish(choice)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def waiting_requests(self) -> list[Request]:
        """The queue as it is now (a copy)."""
        with self._lock:
            return list(self.waiting)

    def has_work(self) -> bool:
        return bool(
            self.running
            or self.prefill
            or self.waiting
            or self.score_requests
            or not self.commands.empty()
        )

    # --- engine thread ---

    @torch.no_grad()
    def step(self) -> bool:
        """One scheduling step; False if there was nothing it could do."""
        try:
            return self._step()
        finally:
            self._flush()

    def _emit(self, request: Request, event: Event) -> None:
        self._outbox.append((request.sink, event))

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        deliver(outbox)

    def _step(self) -> bool:
        self.steps += 1
        worked = False
        while not self.commands.empty():
            self.commands.get_nowait()()
            worked = True
        self._drop_cancelled()
        self._admit()
        if self.prefill is None and self.score_requests:
            worked = self._score_step() or worked
        if self.prefill is not None or self.running:
            self._forward()
            worked = True
        return worked

    def fail_all(self, error: BaseException) -> None:
        """After a failed step: every request in flight gets ``error`` now and returns its
        adapter reference; the batch is reset. A prefill group stays in ``self.prefill`` until
        its rows have joined ``self.running``, so a step failing in between misses nobody."""
        in_flight = self.running + (self.prefill[1] if self.prefill else [])
        self.running, self.prefill = [], None
        self.cache.reset()
        self.batch = DecodeBatch(self.cache)
        self.rows.keep([])
        for request in in_flight:
            request.row = None  # the rows were all reset above
        for request in dict.fromkeys(in_flight):  # a row may be in both while it joins
            if request.state is State.DONE:  # finished (and told so) before the failure
                continue
            self._emit(request, error)
            self._finish(request)
            self.finished["error"] += 1
        self._flush()
        with self._lock:
            scores, self.score_requests = list(self.score_requests), deque()
        for score in scores:
            self.adapters.release(score.version)
            if not score.future.done():
                score.future.set_exception(error)

    def _finish(self, request: Request) -> None:
        """The request leaves the engine: its adapter reference is returned, exactly once."""
        if request.state is State.DONE:
            return
        request.state = State.DONE
        if request.row is not None:  # a running row leaves the batch in ``_keep_rows``
            self.cache.give_back(request.row)
            request.row = None
        if request.acquired is not None:
            assert request.version is not None
            self.adapters.release(request.version)

    def _drop_cancelled(self) -> None:
        if any(r.cancelled for r in self.running):
            keep = [i for i, r in enumerate(self.running) if not r.cancelled]
            for request in self.running:
                if request.cancelled:
                    self._finish(request)
                    self.finished["cancelled"] += 1
            self._keep_rows(keep)
        if self.prefill and all(r.cancelled for r in self.prefill[1]):
            for request in self.prefill[1]:
                self._finish(request)
                self.finished["cancelled"] += 1
            self.prefill = None

    def _admit(self) -> None:
        if self.prefill is not None:
            return
        if not self.running and self.waiting:
            self._let_burst_land()
        free = self.cache.free_rows
        budget = self._prefill_budget()
        chosen: list[Request] = []
        failed: list[tuple[Request, BaseException]] = []
        width = 0
        now = time.monotonic()
        with self._lock:  # only cheap work here: the event loop takes this lock to submit
            for request in list(self.waiting):
                if len(request.choices) > free:
                    break  # first come, first served: later requests wait for rows too
                grown = max(width, len(request.prompt))
                if chosen and (len(chosen) + 1) * grown > budget:
                    break
                try:
                    slot = self._slot_for(request, now)
                except Exception as e:  # its adapter failed to load: tell it, admit others
                    self.waiting.remove(request)
                    failed.append((request, e))
                    continue
                if slot is None:
                    if request.slot_wait_since and now - request.slot_wait_since >= SLOT_WAIT_LIMIT:
                        break  # waited long enough: nobody overtakes it any more
                    continue
                self.waiting.remove(request)
                self._take_rows(request, slot)
                width = grown
                free -= len(request.choices)
                chosen.append(request)
        self.adapters.copy_reserved()  # slot copies, without the lock
        for request, error in failed:
            for choice in request.choices:
                self._emit(choice, error)
                self._finish(choice)
                self.finished["error"] += 1
        if chosen:
            self.cache.reserve(max(len(r.prompt) + r.params.max_tokens for r in chosen))
            rows = [cache_rows(r.choices) for r in chosen]
            group = PrefillGroup([r.prompt for r in chosen], rows, self.pad_id, self.cache)
            self.prefill = (group, [c for r in chosen for c in r.choices])

    def _take_rows(self, request: Request, slot: int) -> None:
        """Give each choice of ``request`` a cache row and its adapter's slot; the siblings
        take their own adapter references (already loaded: they are done at once)."""
        for choice, row in zip(request.choices, self.cache.take(len(request.choices)), strict=True):
            if choice is not request and choice.version is not None:
                choice.acquired = self.adapters.acquire(choice.version, "policy")
            choice.slot, choice.row, choice.state = slot, row, State.PREFILL

    def _slot_for(self, request: Request, now: float) -> int | None:
        """The LoRA slot ``request`` runs in (0: the base), or None while its adapter is
        loading or every slot is busy. The first call takes its adapter reference, which
        starts the load (``_finish`` returns it); raises if the load failed."""
        if request.version is None:
            return 0
        if request.acquired is None:
            request.acquired = self.adapters.acquire(request.version, "policy")
            request.acquired.add_done_callback(lambda _: self.wake())
        if not request.acquired.done():
            return None
        request.acquired.result()  # raises the load's error
        slot = self.adapters.reserve(request.version)
        if slot is None and request.slot_wait_since is None:
            request.slot_wait_since = now
        return slot

    def _let_burst_land(self) -> None:
        deadline = time.monotonic() + BURST_MAX_WAIT
        while (now := time.monotonic()) < deadline:
            try:
                quiet = now - self.waiting[-1].arrived
            except IndexError:  # the waiting requests were cancelled meanwhile
                return
            with self._lock:  # other threads append
                rows = sum(len(r.choices) for r in self.waiting)
                on_the_way = self.on_the_way
            if quiet >= BURST_GAP and not on_the_way:
                return
            if rows >= self.cache.free_rows:
                return  # the batch is full: waiting longer gains nothing
            time.sleep(max(BURST_GAP - quiet, 0.001))

    def _prefill_budget(self) -> int:
        return self.budget if self.running else max(self.budget, IDLE_PREFILL_TOKENS)

    def _forward(self) -> None:
        """ONE forward pass: the prefill group's next chunk and a decode step of the running
        rows together (Sarathi-style piggybacking), so that a newcomer's prompt costs no pass
        of its own: on a memory-bound device each pass reads every weight once, whatever the
        number of tokens it carries."""
        parts: list[Part] = []
        bindings: list[tuple[GatheredRows | BatchRows, int, int]] = []
        prefill = self.prefill
        if prefill is not None:
            group, requests = prefill
            firsts = [r for r in requests if r.index == 0]  # one per prompt, in group order
            asked = [p for p, first in enumerate(firsts) if first.params.prompt_logprobs is not None]
            sink = self._prompt_logprobs_sink(firsts) if asked else None
            # Every position's logits are [chunk, V] per asking prompt: such chunks keep to the
            # normal budget even on an idle engine.
            part = group.part(self._prefill_budget() if sink is None else self.budget)
            parts.append(part)
            bindings.append((self.lora.gather([r.slot for r in firsts]), *part.ids.shape))
        running = self.running
        if running:
            parts.append(self.batch.part())
            bindings.append((self.rows, len(running), 1))
        with self.lora.use(bindings[0][0] if len(parts) == 1 else Parts(bindings)):
            hidden = self.decoder.hidden_parts(parts)
        if running:  # before the prefill's rows join ``self.running``
            self._after_decode(self.batch.after(self.decoder, hidden[-1]))
        if prefill is not None:
            logits = group.after(self.decoder, hidden[0], sink, asked)
            if logits is not None:
                self._join(logits, firsts, requests)

    def _join(self, logits: torch.Tensor, firsts: list[Request], requests: list[Request]) -> None:
        """The prefill group is done: each choice samples its first token from its prompt's
        last ``logits``; those that go on join the decode batch."""
        for first in firsts:  # the choices of a prompt share its log-probabilities
            for sibling in first.siblings:
                sibling.prompt_logprobs = first.prompt_logprobs
        if len(firsts) < len(requests):  # each choice samples from its prompt's logits
            prompt_of = [i for i, first in enumerate(firsts) for _ in first.choices]
            logits = logits.index_select(0, torch.tensor(prompt_of, device=logits.device))
        tokens = self._choose(logits, requests)
        keep = []
        for i, (request, token, lp) in enumerate(
            zip(
                requests,
                tokens.tolist(),
                token_logprobs(logits, tokens, [r.params for r in requests]),
                strict=True,
            )
        ):
            request.first_token_at = time.monotonic()
            if request.index == 0:  # computed once for all its choices
                self.prompt_tokens += len(request.prompt)
            if request.cancelled:
                self._finish(request)
                self.finished["cancelled"] += 1
            elif self._advance(request, token, lp):
                self._finish(request)
            else:
                keep.append(i)
        joined = [requests[i] for i in keep]
        if joined:
            self.batch.join(
                cache_rows(joined),
                tokens[torch.tensor(keep, device=tokens.device)],
                [len(r.prompt) for r in joined],
            )
            self.rows.join([r.slot for r in joined])
        for request in joined:
            request.state = State.RUNNING
        self.prefill = None  # only now: until here a failure must reach these requests
        self.running.extend(joined)

    def _prompt_logprobs_sink(self, firsts: list[Request]) -> PositionsSink:
        """Collects prompt p's log-probabilities into ``firsts[p]``, chunk by chunk."""

        def sink(p: int, logits: torch.Tensor, targets: torch.Tensor) -> None:
            request = firsts[p]
            if request.prompt_logprobs is None:
                request.prompt_logprobs = []
            k = request.params.prompt_logprobs or 0
            request.prompt_logprobs.extend(position_logprobs(logits, targets, k))

        return sink

    def _after_decode(self, logits: torch.Tensor) -> None:
        """Each running row samples its next token from ``logits`` [rows, V]."""
        tokens = self._choose(logits, self.running)
        self.batch.next_ids[: len(tokens)] = tokens
        logprobs = token_logprobs(logits, tokens, [r.params for r in self.running])
        keep = []
        for i, (request, token, lp) in enumerate(
            zip(self.running, tokens.tolist(), logprobs, strict=True)
        ):
            if self._advance(request, token, lp):
                self._finish(request)
            else:
                keep.append(i)
        if len(keep) < len(self.running):
            self._keep_rows(keep)

    def _keep_rows(self, keep: list[int]) -> None:
        """Only ``running[i]`` for i in ``keep`` run on (the others have given their rows
        back); the batch closes the gaps they leave (``compaction``)."""
        order = compaction(keep, len(self.running))
        self.running = [self.running[i] for i in order]
        self.batch.keep(order)
        self.rows.keep(order)

    def _choose(self, logits: torch.Tensor, requests: list[Request]) -> torch.Tensor:
        params = [r.params for r in requests]
        scores = process_logits(
            logits, params, [r.prompt for r in requests], [r.output for r in requests], self.eos_ids
        )
        return choose_tokens(scores, params, [r.generator for r in requests])

    def _advance(self, request: Request, token: int, lp: TokenLogprobs | None) -> bool:
        """Record ``token`` for ``request``, stream its event; True if the request is done."""
        request.output.append(token)
        self.generated_tokens += 1
        params = request.params
        finish: FinishReason | None = None
        if len(request.output) < params.min_tokens:  # as in vLLM: nothing stops it before
            text = request.decoder.push(token)
        elif (token in self.eos_ids and not params.ignore_eos) or token in params.stop_token_ids:
            text, finish = request.stops.flush(), "stop"
        else:
            text, hit = request.stops.push(request.decoder.push(token))
            if hit:
                finish = "stop"
            elif len(request.output) >= params.max_tokens:
                text, finish = text + request.stops.flush(), "length"
        usage = None
        if finish:
            usage = Usage(len(request.prompt), len(request.output))
            self.finished[finish] += 1
            self._finish(request)  # released before the caller can observe the end
        self._emit(
            request,
            TokenEvent(
                token_id=token,
                text=text,
                logprob=lp.logprob if lp else None,
                top_logprobs=lp.top if lp else None,
                finish_reason=finish,
                usage=usage,
                version=request.version,
                index=request.index,
                prompt_logprobs=request.prompt_logprobs if len(request.output) == 1 else None,
            ),
        )
        return finish is not None

    def _score_step(self) -> bool:
        score = self.score_requests[0]
        if score.future.cancelled():
            self._end_score_request()
            return True
        slot = self.adapters.place(score.version)
        if slot is None:
            return False  # every slot in use: try again next step
        rows = score.next_rows(self.budget)
        score.scores.extend(score_rows(self.model, self.lora, slot, rows, self.pad_id))
        if len(score.scores) == len(score.sequences):
            self._end_score_request()
            if not score.future.done():
                score.future.set_result(score.scores)
        return True

    def _end_score_request(self) -> None:
        with self._lock:
            score = self.score_requests.popleft()
        self.adapters.release(score.version)


def cache_rows(requests: list[Request]) -> list[int]:
    """The KV-cache rows of admitted requests (each holds one from admission to its end)."""
    rows = []
    for request in requests:
        assert request.row is not None, "an admitted request without its cache row"
        rows.append(request.row)
    return rows
