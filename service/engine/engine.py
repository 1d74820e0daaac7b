"""The inference engine: one base model, many adapters per batch, an asyncio-friendly API.

Built once at start-up. Model work happens on one background thread (the scheduler loop);
adapter downloads and alias lookups on a small I/O pool; callers use coroutines::

    engine = Engine(settings, registry)
    async for event in engine.generate(prompt_ids, "summarize@production", SamplingParams()):
        ...                                    # TokenEvent: token, text delta, logprob, finish
    scores = await engine.score("judge", prompt, [completion_a, completion_b])
    engine.close()
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.adapters import AdapterKind
from core.base.checkpoint import load_base_model, load_tokenizer
from core.base.folders import base_model_info
from core.base.info import BaseModelInfo
from core.errors import InvalidRequest, Overloaded, Unavailable
from core.names import AdapterVersion, Reference, parse_model, parse_ref
from core.registry import Manifest, Registry
from core.reward_format import reward_input_ids
from core.settings import Settings
from service.engine.adapters import AdapterManager, AdapterStatus, check_manifest
from service.engine.decoder import Decoder
from service.engine.events import EngineEvents
from service.engine.hotswap import AliasFollower, AliasMove
from service.engine.kv_cache import KVCache
from service.engine.lora import LoraModel
from service.engine.request import EventSink, GenerationResult, Request, TokenEvent
from service.engine.reward import ScoreRequest
from service.engine.sampling import SamplingParams
from service.engine.scheduler import Scheduler
from service.engine.stream import TokenStream
from service.engine.text import IncrementalDecoder, StopMatcher
from service.engine.weights import AdapterWeights, read_adapter

log = logging.getLogger(__name__)

MIB = 1 << 20


class EngineClosed(Unavailable):
    """The engine shut down while the request was pending (503: another replica may serve)."""


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
        self._loads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="loraloop-load")
        self.adapters = AdapterManager(
            self.lora, self._load_weights, self._loads,
            max_host_adapters=settings.max_host_adapters, events=events,
        )
        self.follower = AliasFollower(registry, self._warm, events)
        self._wakeup = threading.Event()
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
            wake=self._wakeup.set,
        )
        self._reserved = 0  # requests between the queue check and the scheduler's queue
        self._reserve_lock = threading.Lock()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="loraloop-engine", daemon=True)
        self._thread.start()
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
        self._check_prompt(prompt_ids, params)
        self._check_n(n)
        ref = self.reference(adapter)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()
        self._reserve()
        try:
            version = None
            if ref is not None:
                # Only the version: the scheduler loads the weights when it admits the request,
                # so waiting requests hold no host copies (max_host_adapters bounds them).
                version = self._check(await self._resolve(ref), "policy")
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
        finally:
            with self._reserve_lock:
                self._reserved -= 1
        self._wakeup.set()
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
        return min(self.settings.max_n, self.settings.max_batch_size)

    def _check_n(self, n: int) -> None:
        limit = self.max_choices
        if not isinstance(n, int) or not 1 <= n <= limit:
            raise InvalidRequest(
                f"n must be between 1 and {limit} (max_n and max_batch_size bound it)", param="n"
            )

    def _check_prompt(self, prompt_ids: list[int], params: SamplingParams) -> None:
        if not prompt_ids:
            raise InvalidRequest("the prompt is empty", param="prompt")
        if len(prompt_ids) > self.settings.max_prompt_tokens:
            raise InvalidRequest(
                f"the prompt has {len(prompt_ids)} tokens; the limit is "
                f"{self.settings.max_prompt_tokens}",
                param="prompt",
            )
        if params.max_tokens > self.settings.max_new_tokens:
            raise InvalidRequest(
                f"max_tokens {params.max_tokens} exceeds the limit {self.settings.max_new_tokens}",
                param="max_tokens",
            )
        if len(prompt_ids) + params.max_tokens > self.max_context:
            raise InvalidRequest(
                f"prompt + max_tokens = {len(prompt_ids) + params.max_tokens} exceeds the "
                f"model's context of {self.max_context} tokens",
                param="max_tokens",
            )
        if len(prompt_ids) + params.max_tokens > self.kv_cache.row_tokens:
            raise InvalidRequest(
                f"prompt + max_tokens = {len(prompt_ids) + params.max_tokens} exceeds the "
                f"{self.kv_cache.row_tokens} tokens a KV-cache row holds (kv_cache_row_tokens); "
                "lower max_tokens or shorten the prompt",
                param="max_tokens",
            )
        if min(prompt_ids) < 0 or max(prompt_ids) >= self.vocab_size:
            raise InvalidRequest(
                "the prompt holds token ids outside the vocabulary", param="prompt"
            )
        if params.logit_bias and params.logit_bias[-1][0] >= self.vocab_size:  # sorted by id
            raise InvalidRequest(
                f"logit_bias names token id {params.logit_bias[-1][0]}, outside the "
                f"vocabulary of {self.vocab_size} tokens",
                param="logit_bias",
            )

    def _cancel(self, requests: list[Request]) -> None:
        for request in requests:
            self.scheduler.cancel(request)
        self._wakeup.set()

    def _reserve(self) -> None:
        with self._reserve_lock:
            if self._closing:
                raise EngineClosed("the engine is shutting down")
            scheduler = self.scheduler
            queued = self._reserved + scheduler.num_waiting + len(scheduler.score_requests)
            if queued >= self.settings.max_queue:
                raise Overloaded(
                    f"{self.settings.max_queue} requests are already waiting; retry later"
                )
            self._reserved += 1

    # --- reward scoring ---

    async def score(
        self, reward: Reference | str, prompt: str, completions: list[str]
    ) -> list[float]:
        """Reward of each (prompt, completion) under the reward adapter ``reward``; the pair is
        tokenized by ``core.reward_format.reward_input_ids`` (the format reward training must use)."""
        sequences = await asyncio.get_running_loop().run_in_executor(  # never on the loop
            self._io, lambda: [reward_input_ids(self.tokenizer, prompt, c) for c in completions]
        )
        return await self.score_ids(reward, sequences)

    async def score_ids(self, reward: Reference | str, sequences: list[list[int]]) -> list[float]:
        """Reward of each token sequence (already formatted as the reward model reads it)."""
        if not sequences:
            return []
        for ids in sequences:
            if not ids or len(ids) > self.max_context or max(ids) >= self.vocab_size:
                raise InvalidRequest("each scored sequence needs 1..context valid token ids")
        ref = self._adapter_reference(reward)
        self._reserve()  # scoring counts against the same queue bound as generation
        try:
            manifest = await self._resolve(ref)
            version = await self._acquire(manifest, "reward")
            score = ScoreRequest(version, [list(s) for s in sequences], Future())
            self.scheduler.submit_score(score)  # the scheduler releases ``version`` at its end
        finally:
            with self._reserve_lock:
                self._reserved -= 1
        self._wakeup.set()
        try:
            return await asyncio.wrap_future(score.future)
        except asyncio.CancelledError:
            score.future.cancel()
            raise

    async def reward_version(self, ref: Reference, param: str = "model") -> AdapterVersion:
        """The reward adapter version ``ref`` names now, checked before any work is queued:
        NotFound if there is none, InvalidRequest (on ``param``) if it is not a reward adapter.
        Scoring with the returned version scores every sequence with that one version."""
        return self._check(await self._resolve(ref), "reward", param)

    # --- adapters (admin) ---

    async def load(self, ref: Reference | str) -> AdapterStatus:
        """Load ``ref`` into host memory and a slot if one is free or evictable."""
        manifest = await self._resolve(self._adapter_reference(ref))
        key = await self._acquire(manifest, manifest.kind)
        try:
            await asyncio.wrap_future(self._on_engine_thread(lambda: self.adapters.place(key)))
        finally:
            self.adapters.release(key)
        return self._status(key)

    async def pin(self, ref: Reference | str, pinned: bool = True) -> AdapterStatus:
        """Pin (keep in a slot and in memory, never evicted) or unpin ``ref``."""
        manifest = await self._resolve(self._adapter_reference(ref))
        key = await self._acquire(manifest, manifest.kind)
        try:
            self.adapters.set_pinned(key, pinned)
            if pinned:
                await asyncio.wrap_future(self._on_engine_thread(lambda: self.adapters.place(key)))
        finally:
            self.adapters.release(key)
        return self._status(key)

    async def unload(self, ref: Reference | str) -> None:
        """Drop ``ref`` from its slot and host memory. Conflict if requests are using it."""
        manifest = await self._resolve(self._adapter_reference(ref))
        key = manifest.adapter_version
        await asyncio.wrap_future(self._on_engine_thread(lambda: self.adapters.drop(key)))

    async def refresh_aliases(self) -> list[AliasMove]:
        """Re-read followed aliases now; returns the moves applied (new versions are loaded
        before requests are switched to them)."""
        return await asyncio.get_running_loop().run_in_executor(self._io, self.follower.refresh)

    def residency(self) -> list[AdapterStatus]:
        """Every adapter version the engine holds or has held: tier, pin, use, aliases."""
        aliases = self.follower.aliases_of()
        statuses = self.adapters.status()
        for status in statuses:
            status.aliases = sorted(aliases.get(AdapterVersion(status.adapter, status.version), []))
        return statuses

    @property
    def alive(self) -> bool:
        """Whether the scheduler loop is running (for readiness probes)."""
        return self._thread.is_alive() and not self._closing

    def stats(self) -> EngineStats:
        scheduler = self.scheduler
        prefill = scheduler.prefill  # read once: the engine thread may replace it
        prefilling = len(prefill[1]) if prefill else 0
        return EngineStats(
            running=len(scheduler.running) + prefilling,
            waiting=scheduler.num_waiting + self._reserved,
            steps=scheduler.steps,
            adapter_loads=self.adapters.loads,
            prompt_tokens=scheduler.prompt_tokens,
            generated_tokens=scheduler.generated_tokens,
            finished=dict(scheduler.finished),
            slots_used=sum(s.slot is not None for s in self.adapters.status()),
            slots_total=self.settings.max_active_adapters,
        )

    def _status(self, key: AdapterVersion) -> AdapterStatus:
        return next(s for s in self.residency() if AdapterVersion(s.adapter, s.version) == key)

    # --- references ---

    def reference(self, model: Reference | str | None) -> Reference | None:
        """What a caller named: None for the base model. Text (``base``, the base's id, ``name``,
        ``name@alias``, ``name@N``) is parsed here, for Python callers; the HTTP service parses
        the request's ``model`` once at its edge and passes the result."""
        if isinstance(model, str):
            return parse_model(model, self.base_info.model_id, param="model")
        return model

    def _adapter_reference(self, ref: Reference | str) -> Reference:
        return parse_ref(ref, param="model") if isinstance(ref, str) else ref

    # --- internals ---

    async def _resolve(self, ref: Reference) -> Manifest:
        """The manifest ``ref`` serves now: from memory, or looked up on the I/O pool."""
        known = self.follower.cached(ref)
        if known is not None:
            return known
        return await asyncio.get_running_loop().run_in_executor(
            self._io, self.follower.resolve, ref
        )

    def _check(self, manifest: Manifest, kind: AdapterKind, param: str = "model") -> AdapterVersion:
        """The key of ``manifest``'s version if this engine can serve it as ``kind``."""
        if manifest.kind != kind:
            raise InvalidRequest(
                f"{manifest.ref} is a {manifest.kind} adapter; this call needs a {kind} adapter",
                param=param,
            )
        check_manifest(manifest, self.base_info, self.settings.max_lora_rank)
        return manifest.adapter_version

    async def _acquire(self, manifest: Manifest, kind: AdapterKind) -> AdapterVersion:
        """A reference on ``manifest``'s version, loaded; the caller releases it. Cancelling
        the caller cancels its wait only, never the load others may share."""
        key = self._check(manifest, kind)
        future = self.adapters.acquire(key, kind)
        try:
            await asyncio.wrap_future(future)
        except BaseException:
            self.adapters.release(key)
            raise
        return key

    def _load_weights(self, key: AdapterVersion) -> AdapterWeights:
        """Fetch (disk cache, else registry; sha256-checked) and read one version (I/O pool).
        Only reached through ``_acquire`` or ``_warm``, which have checked the manifest."""
        manifest = self.follower.manifest(key)
        # Not evicted meanwhile; with the manifest given, a version in the disk cache loads
        # while the registry is unreachable.
        with self.registry.checkout(key.adapter, key.version, manifest) as folder:
            weights = read_adapter(
                folder,
                self.base_info,
                kind=manifest.kind,
                max_rank=self.settings.max_lora_rank,
                modules=frozenset(self.settings.lora_target_modules),
                dtype=self.lora.dtype,
                name=str(key),
            )
        if self.device.type == "cuda":  # page-locked host copies make slot copies async
            for pair in weights.pairs.values():
                pair.A, pair.B = pair.A.pin_memory(), pair.B.pin_memory()
        return weights

    def _warm(self, manifest: Manifest) -> None:
        """Load a version an alias moved to, before requests are switched to it (blocking)."""
        key = self._check(manifest, manifest.kind)
        try:
            self.adapters.acquire(key, manifest.kind).result()  # raises if it cannot be loaded
        except BaseException:
            self.adapters.release(key)  # a failed load keeps nothing: the next try loads again
            raise

        def place_then_release() -> None:  # best effort: also copy it into a slot now
            try:
                self.adapters.place(key)
            finally:
                self.adapters.release(key)

        self._on_engine_thread(place_then_release)

    def _on_engine_thread(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` between two engine steps; its result or exception in the future."""
        future: Future = Future()

        def command() -> None:
            try:
                future.set_result(fn())
            except Exception as e:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(e)

        self.scheduler.commands.put(command)
        self._wakeup.set()
        return future

    def _loop(self) -> None:
        while not self._closing:
            self._wakeup.clear()
            worked = False
            if self.scheduler.has_work():
                try:
                    worked = self.scheduler.step()
                except Exception as e:
                    log.exception("engine step failed; failing the requests in flight")
                    self.scheduler.fail_all(e)
                    worked = True
            if not worked:
                self._wakeup.wait(0.05 if self.scheduler.has_work() else 1.0)

    def close(self, reason: str = "the engine was closed") -> None:
        """Stop the engine: waiting and running requests get EngineClosed(``reason``)."""
        if self._closing:
            return
        with self._reserve_lock:
            self._closing = True
        self._wakeup.set()
        self._thread.join(timeout=30)
        self.follower.stop()
        error = EngineClosed(reason)
        with self.scheduler._lock:
            waiting = list(self.scheduler.waiting)
        for request in waiting:
            request.sink.put(error)
            self.scheduler.cancel(request)
        self.scheduler.fail_all(error)
        self._io.shutdown(wait=False, cancel_futures=True)
        self._loads.shutdown(wait=False, cancel_futures=True)


def choice_generator(params: SamplingParams, index: int, device) -> torch.Generator:
    """Choice ``index``'s random stream: choice 0 draws as a request with ``params.seed``
    alone does; the others from seeds mixed from (seed, index), so a seeded call for n
    choices is reproducible and its choices differ."""
    if params.seed is None or index == 0:
        return params.generator(device)
    mixed = (params.seed + index * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)  # golden-ratio step
    return torch.Generator(device=device).manual_seed(mixed)
