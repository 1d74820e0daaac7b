"""The inference engine: one base model, many adapters per batch, an asyncio-friendly API.

Built once at start-up. Model work happens on one background thread (the scheduler loop);
adapter downloads and alias lookups on a small I/O pool; callers use coroutines::

    engine = Engine(settings, registry)
    async for event in engine.generate(prompt_ids, "summarize@production", SamplingParams()):
        ...                                    # TokenEvent: token, text delta, logprob, finish
    scores = await engine.score("judge", prompt, [completion_a, completion_b])
    engine.close()

This class is the facade: it builds the parts once and composes them, one job each::

    admission.py   limits on a call, the bounded queue    (InvalidRequest, 429, 503)
    loading.py     reference -> manifest -> loaded version (alias follower in hotswap.py,
                   manifest cache in manifests.py, residency in adapters.py)
    scheduler.py   continuous batching, on the engine thread (engine_thread.py)
    scoring.py     reward scoring calls                    (reward.py: the math)
    residency.py   admin: load, pin, unload, refresh aliases, list
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.base.checkpoint import load_base_model, load_tokenizer
from core.base.folders import base_model_info
from core.base.info import BaseModelInfo
from core.names import AdapterVersion, Reference, parse_model
from core.registry import Registry
from core.settings import Settings
from service.engine.adapters import AdapterManager, AdapterStatus
from service.engine.admission import Admission, EngineClosed
from service.engine.decoder import Decoder
from service.engine.engine_thread import EngineThread
from service.engine.events import EngineEvents
from service.engine.hotswap import AliasMove
from service.engine.kv_cache import KVCache
from service.engine.loading import AdapterLoading, WeightLoader
from service.engine.lora import LoraModel
from service.engine.manifests import ManifestCache
from service.engine.request import EventSink, GenerationResult, Request, TokenEvent
from service.engine.residency import AdapterAdmin
from service.engine.sampling import SamplingParams, choice_generator
from service.engine.scheduler import Scheduler
from service.engine.scoring import RewardScoring
from service.engine.stream import TokenStream
from service.engine.text import IncrementalDecoder, StopMatcher
from service.engine.threads import OwnThreadExecutor, on_own_thread

log = logging.getLogger(__name__)

MIB = 1 << 20


@dataclass(frozen=True)
class EngineStats:
    """A snapshot for metrics and health checks; counters are totals since start-up."""

    running: int  # requests in the batch or in prefill
    waiting: int  # requests queued (or resolving their adapter)
    steps: int
    adapter_loads: int  # host loads started (disk cache or registry)
    prompt_tokens: int  # prompt tokens computed: once per call, whatever its n
    generated_tokens: int
    finished: dict[str, int]  # by reason: stop, length, cancelled, error
    slots_used: int
    slots_total: int


class Engine:
    """See the module docstring. Thread-safe; every public coroutine may be awaited from any
    event loop. A ``model`` passed in is owned by the engine from then on: LoRA wrappers are
    installed into it (its weights are never changed)."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        base_info: BaseModelInfo | None = None,
        events: EngineEvents | None = None,
    ):
        # Loading the model and allocating the slots and the cache run torch ops: on a thread
        # that ends here, so that the engine thread's OpenMP team stays the only one (threads.py).
        on_own_thread(
            lambda: self._build(settings, registry, model, tokenizer, base_info, events),
            "loraloop-build",
        )

    def _build(
        self,
        settings: Settings,
        registry: Registry,
        model: PreTrainedModel | None,
        tokenizer: PreTrainedTokenizerBase | None,
        base_info: BaseModelInfo | None,
        events: EngineEvents | None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.base_info = base_info or base_model_info(settings)
        self.tokenizer = tokenizer or load_tokenizer(settings)
        self.model = model or load_base_model(settings)
        self.model.requires_grad_(False).eval()
        self.lora = LoraModel(
            self.model,
            settings.lora_target_modules,
            num_slots=settings.max_active_adapters,
            max_rank=settings.max_lora_rank,
        )
        self.device = self.lora.device
        config = self.model.config
        self.max_context = getattr(config, "max_position_embeddings", None) or 1 << 30
        self.vocab_size = config.vocab_size
        eos = self.model.generation_config.eos_token_id
        eos_ids = {self.tokenizer.eos_token_id} | set(eos if isinstance(eos, list) else [eos])
        pad_id = self.tokenizer.pad_token_id
        # Two pools: lookups and alias refreshes (which wait for loads) never starve the loads.
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="loraloop-lookup")
        # Reading weights runs torch ops (a dtype conversion): each load on a thread of its own.
        self._loads = OwnThreadExecutor(max_workers=4, name="loraloop-load")
        manifests = ManifestCache(registry)
        weights = WeightLoader(
            registry, manifests, self.base_info, settings, self.lora.dtype, self.device
        )
        self.adapters = AdapterManager(
            self.lora, weights.read, self._loads,
            max_host_adapters=settings.max_host_adapters, events=events,
        )
        # The engine thread sleeps on it; the scheduler sets it when a load finishes.
        wakeup = threading.Event()
        decoder = Decoder(self.model)
        self.kv_cache = KVCache(
            decoder.layers,
            rows=settings.max_batch_size,
            kv_heads=decoder.kv_heads,
            head_dim=decoder.head_dim,
            row_tokens=min(
                settings.kv_cache_row_tokens
                or settings.max_prompt_tokens + settings.max_new_tokens,
                self.max_context,
            ),
            dtype=self.lora.dtype,
            device=self.device,
        )
        self.scheduler = Scheduler(
            self.model,
            self.lora,
            self.adapters,
            decoder,
            self.kv_cache,
            prefill_chunk_tokens=settings.prefill_chunk_tokens,
            eos_ids={i for i in eos_ids if i is not None},
            pad_id=pad_id if pad_id is not None else 0,
            wake=wakeup.set,
        )
        self.thread = EngineThread(self.scheduler, wakeup)
        self.admission = Admission(
            settings,
            self.scheduler,
            max_context=self.max_context,
            vocab_size=self.vocab_size,
            row_tokens=self.kv_cache.row_tokens,
        )
        self.loading = AdapterLoading(
            registry, manifests, self.adapters, self.thread, self._io,
            self.base_info, settings.max_lora_rank, events,
        )
        self.follower = self.loading.follower
        self.scoring = RewardScoring(
            self.tokenizer, self.admission, self.loading, self.scheduler, self.thread, self._io
        )
        self.admin = AdapterAdmin(self.loading, self.adapters, self.thread, self._io)
        self.thread.start()
        self.follower.start(settings.alias_poll_seconds)
        log.info(
            "engine ready: %s on %s, %d adapter slots (rank <= %d), batch <= %d; LoRA buffers "
            "%.1f MiB preallocated (slots %.1f MiB + per-row copies %.1f MiB); KV cache "
            "%d rows x %d tokens, up to %.1f MiB (grows with the longest row)",
            self.base_info.model_id,
            self.device,
            settings.max_active_adapters,
            settings.max_lora_rank,
            settings.max_batch_size,
            (self.lora.nbytes + self.scheduler.rows.nbytes) / MIB,
            self.lora.nbytes / MIB,
            self.scheduler.rows.nbytes / MIB,
            self.kv_cache.rows,
            self.kv_cache.row_tokens,
            self.kv_cache.max_nbytes / MIB,
        )

    # --- generation ---

    def arriving(self) -> AbstractContextManager[None]:
        """Wrap the preparation of a request (templating, tokenizing) and its ``submit``: an
        idle engine waits (briefly) for the requests on their way, so a burst starts as one
        batch."""
        return self.scheduler.arriving()

    async def submit(
        self,
        prompt_ids: list[int],
        adapter: Reference | str | None = None,
        params: SamplingParams | None = None,
        n: int = 1,
    ) -> TokenStream:
        """Queue a generation of ``n`` choices and return its event stream (each event names
        its choice's ``index``; the prompt is prefilled once for all n). ``adapter``: a parsed
        reference, None for the base model, or its text (see ``reference``). Raises before
        anything streams: InvalidRequest, Overloaded (queue full), NotFound / InvalidAdapter
        (adapter's manifest). An adapter that fails to load (fetch, integrity, weights) ends
        the stream with the error instead."""
        params = params or SamplingParams()
        self.admission.check_prompt(prompt_ids, params)
        self.admission.check_n(n)
        ref = self.reference(adapter)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()
        with self.admission.reservation():
            version = None
            if ref is not None:
                # Only the version: the scheduler loads the weights when it admits the request,
                # so waiting requests hold no host copies (max_host_adapters bounds them).
                version = self.loading.check(await self.loading.resolve(ref), "policy")
            sink = EventSink(loop, events)
            choices = [
                Request(
                    prompt=list(prompt_ids),
                    params=params,
                    version=version,
                    sink=sink,
                    generator=choice_generator(params, i, self.device),
                    decoder=IncrementalDecoder(self.tokenizer, prompt_ids),
                    stops=StopMatcher(params.stop),
                    index=i,
                )
                for i in range(n)
            ]
            choices[0].siblings = choices[1:]
            self.scheduler.submit(choices[0])
        self.thread.wake()
        return TokenStream(choices, events, self._cancel)

    async def generate(
        self,
        prompt_ids: list[int],
        adapter: Reference | str | None = None,
        params: SamplingParams | None = None,
    ) -> AsyncIterator[TokenEvent]:
        """``async for event in engine.generate(...)``: ``submit`` and stream in one call."""
        stream = await self.submit(prompt_ids, adapter, params)
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()

    async def complete(
        self,
        prompt_ids: list[int],
        adapter: Reference | str | None = None,
        params: SamplingParams | None = None,
    ) -> GenerationResult:
        """The whole generation at once."""
        return (await self.complete_choices(prompt_ids, adapter, params, 1))[0]

    async def complete_choices(
        self,
        prompt_ids: list[int],
        adapter: Reference | str | None = None,
        params: SamplingParams | None = None,
        n: int = 1,
    ) -> list[GenerationResult]:
        """``n`` whole generations of one prompt (prefilled once), by choice index."""
        params = params or SamplingParams()
        by_choice: list[list[TokenEvent]] = [[] for _ in range(n)]
        async for event in await self.submit(prompt_ids, adapter, params, n):
            by_choice[event.index].append(event)
        want = params.logprobs is not None
        completions = []
        for index, events in enumerate(by_choice):
            last = events[-1]
            assert last.finish_reason is not None and last.usage is not None
            completions.append(
                GenerationResult(
                    text="".join(e.text for e in events),
                    token_ids=[e.token_id for e in events],
                    logprobs=[e.logprob for e in events] if want else None,  # type: ignore[misc]
                    top_logprobs=[e.top_logprobs or {} for e in events] if want else None,
                    finish_reason=last.finish_reason,
                    usage=last.usage,
                    version=last.version,
                    index=index,
                )
            )
        return completions

    @property
    def max_choices(self) -> int:
        """Most choices one generation may have: each takes a KV-cache row."""
        return self.admission.max_choices

    def _cancel(self, requests: list[Request]) -> None:
        for request in requests:
            self.scheduler.cancel(request)
        self.thread.wake()

    # --- reward scoring (scoring.py) ---

    async def score(
        self, reward: Reference | str, prompt: str, completions: list[str]
    ) -> list[float]:
        """Reward of each (prompt, completion) under the reward adapter ``reward``; the pair is
        tokenized by ``core.reward_format.reward_input_ids`` (the format reward training must use)."""
        return await self.scoring.score(reward, prompt, completions)

    async def score_ids(self, reward: Reference | str, sequences: list[list[int]]) -> list[float]:
        """Reward of each token sequence (already formatted as the reward model reads it)."""
        return await self.scoring.score_ids(reward, sequences)

    async def reward_version(self, ref: Reference, param: str = "model") -> AdapterVersion:
        """The reward adapter version ``ref`` names now, checked before any work is queued:
        NotFound if there is none, InvalidRequest (on ``param``) if it is not a reward adapter.
        Scoring with the returned version scores every sequence with that one version."""
        return await self.scoring.reward_version(ref, param)

    # --- adapters (admin: residency.py) ---

    async def load(self, ref: Reference | str) -> AdapterStatus:
        """Load ``ref`` into host memory and a slot if one is free or evictable."""
        return await self.admin.load(ref)

    async def pin(self, ref: Reference | str, pinned: bool = True) -> AdapterStatus:
        """Pin (keep in a slot and in memory, never evicted) or unpin ``ref``."""
        return await self.admin.pin(ref, pinned)

    async def unload(self, ref: Reference | str) -> None:
        """Drop ``ref`` from its slot and host memory. Conflict if requests are using it."""
        await self.admin.unload(ref)

    async def refresh_aliases(self) -> list[AliasMove]:
        """Re-read followed aliases now; returns the moves applied (new versions are loaded
        before requests are switched to them)."""
        return await self.admin.refresh_aliases()

    def residency(self) -> list[AdapterStatus]:
        """Every adapter version the engine holds or has held: tier, pin, use, aliases."""
        return self.admin.residency()

    # --- health ---

    @property
    def alive(self) -> bool:
        """Whether the scheduler loop is running (for readiness probes)."""
        return self.thread.alive and not self.admission.closing

    def stats(self) -> EngineStats:
        scheduler = self.scheduler
        prefill = scheduler.prefill  # read once: the engine thread may replace it
        prefilling = len(prefill[1]) if prefill else 0
        return EngineStats(
            running=len(scheduler.running) + prefilling,
            waiting=scheduler.num_waiting + self.admission.reserved,
            steps=scheduler.steps,
            adapter_loads=self.adapters.loads,
            prompt_tokens=scheduler.prompt_tokens,
            generated_tokens=scheduler.generated_tokens,
            finished=dict(scheduler.finished),
            slots_used=sum(s.slot is not None for s in self.adapters.status()),
            slots_total=self.settings.max_active_adapters,
        )

    def reference(self, model: Reference | str | None) -> Reference | None:
        """What a caller named: None for the base model. Text (``base``, the base's id, ``name``,
        ``name@alias``, ``name@N``) is parsed here, for Python callers; the HTTP service parses
        the request's ``model`` once at its edge and passes the result."""
        if isinstance(model, str):
            return parse_model(model, self.base_info.model_id, param="model")
        return model

    def close(self, reason: str = "the engine was closed") -> None:
        """Stop the engine: waiting and running requests get EngineClosed(``reason``)."""
        if self.admission.closing:
            return
        self.admission.close()
        self.thread.stop()
        self.follower.stop()
        error = EngineClosed(reason)
        for request in self.scheduler.waiting_requests():
            request.sink.put(error)
            self.scheduler.cancel(request)
        self.scheduler.fail_all(error)
        self._io.shutdown(wait=False, cancel_futures=True)
        self._loads.shutdown(wait=False, cancel_futures=True)
