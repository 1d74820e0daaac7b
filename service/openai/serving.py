"""OpenAI completions and chat on the engine: prompts to token ids, events to OpenAI shapes.

Built once at start-up. Knows the engine and the tokenizer, nothing of HTTP: the router turns
its results into JSON or server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from core.errors import InvalidRequest
from core.names import parse_ref
from service.engine import Engine, SamplingParams, TokenEvent, TokenStream
from service.engine import Usage as EngineUsage
from service.engine.sampling import TokenLogprobs
from service.metrics import ServiceMetrics
from service.openai.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    ChatResponseMessage,
    ChatTokenLogprob,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    Prompt,
    SamplingFields,
    TopLogprob,
    Usage,
    new_id,
    now,
)

BASE_MODEL = "base"
T = TypeVar("T")


@dataclass(frozen=True)
class CompletionRecord:
    """What the completion log receives for each finished generation."""

    id: str
    adapter: str | None  # "name@version", None for the base
    prompt: str
    completion: str
    params: dict
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    finish_reason: str


CompletionSink = Callable[[CompletionRecord], None]


@dataclass
class Generation:
    """A generation in progress: the request's events plus what the response needs."""

    id: str
    prompt: str
    prompt_ids: list[int]
    params: SamplingParams
    events: TokenStream
    started: float
    # max_tokens 0 (echo): the engine decodes its one token, which the response leaves out.
    prompt_only: bool = False

    async def aclose(self) -> None:
        await self.events.aclose()


@dataclass
class Completions:
    """A completions request in progress: one generation per prompt, in the prompts' order
    (choice ``i`` answers prompt ``i``). Its id is the first generation's."""

    generations: list[Generation]

    @property
    def id(self) -> str:
        return self.generations[0].id

    async def aclose(self) -> None:
        for generation in self.generations:
            await generation.aclose()


class OpenAIServing:
    def __init__(
        self,
        engine: Engine,
        metrics: ServiceMetrics,
        default_max_tokens: int = 16,
        completion_sink: CompletionSink | None = None,
    ):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.metrics = metrics
        self.default_max_tokens = default_max_tokens
        self.completion_sink = completion_sink
        # Tokenizing a large body takes about a second per MB: never on the event loop, and
        # not at all for a text too long to fit: a token covers at most ``longest`` characters
        # (x2: a normalizer may merge characters), so a longer text has too many tokens.
        self._tokenize = ThreadPoolExecutor(max_workers=2, thread_name_prefix="loraloop-tokenize")
        longest = max(map(len, self.tokenizer.get_vocab()), default=1)
        self.max_prompt_chars = engine.settings.max_prompt_tokens * longest * 2

    def _check_length(self, chars: int) -> None:
        if chars > self.max_prompt_chars:
            limit = self.engine.settings.max_prompt_tokens
            raise InvalidRequest(
                f"the prompt has {chars} characters, more than {limit} tokens (max_prompt_tokens) "
                "can hold; shorten it",
                param="prompt",
            )

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._tokenize, fn)

    # --- model selection ---

    def adapter_of(self, model: str) -> str | None:
        """None for the base model; otherwise the adapter reference (validated)."""
        if model in (BASE_MODEL, self.engine.base_info.model_id):
            return None
        parse_ref(model, param="model")  # InvalidName -> 400 before any work
        return model

    def served_model(self, requested: str, event_adapter: str | None) -> str:
        return event_adapter or (requested if requested == BASE_MODEL else self.engine.base_info.model_id)

    def models(self, adapters: list[tuple[str, int]]) -> ModelList:
        created = now()
        base_id = self.engine.base_info.model_id
        cards = [ModelCard(id=BASE_MODEL, created=created, root=base_id)]
        if base_id != BASE_MODEL:
            cards.append(ModelCard(id=base_id, created=created, root=base_id))
        for name, created_at in adapters:
            cards.append(ModelCard(id=name, created=created_at, root=base_id, parent=base_id))
        return ModelList(data=cards)

    # --- generation ---

    def _sampling(
        self,
        request: SamplingFields,
        max_tokens: int | None,
        logprobs: int | None,
        prompt_logprobs: int | None = None,
    ) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens or self.default_max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=max(request.top_k, 0),
            seed=request.seed,
            stop=tuple(request.stop or ()),
            logprobs=logprobs,
            ignore_eos=request.ignore_eos,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            repetition_penalty=request.repetition_penalty,
            min_tokens=request.min_tokens,
            logit_bias=tuple((request.logit_bias or {}).items()),
            prompt_logprobs=prompt_logprobs,
        )

    def _rest_of_context(self, prompt_ids: list[int]) -> int:
        """Chat's default max_tokens, as in OpenAI and vLLM: what the context leaves after the
        prompt, bounded by max_new_tokens (a prompt filling the context is refused later)."""
        left = self.engine.max_context - len(prompt_ids)
        return max(1, min(self.engine.settings.max_new_tokens, left))

    async def _start(self, prompt: str, prompt_ids: list[int], model: str, params: SamplingParams, prefix: str) -> Generation:
        started = time.monotonic()
        events = await self.engine.submit(prompt_ids, self.adapter_of(model), params)
        return Generation(new_id(prefix), prompt, prompt_ids, params, events, started)

    def _encode(self, prompt: Prompt) -> tuple[str, list[int]]:
        """(text, token ids) of a prompt given as either."""
        if isinstance(prompt, str):
            return prompt, self.tokenizer(prompt)["input_ids"]
        if max(prompt) >= self.engine.vocab_size:
            raise InvalidRequest("the prompt holds token ids outside the vocabulary", param="prompt")
        return self.tokenizer.decode(prompt, skip_special_tokens=True), list(prompt)

    async def start_completion(self, request: CompletionRequest) -> Completions:
        """One generation per prompt; all are queued, or none (an error closes the others)."""
        prompts = request.prompts
        queue = self.engine.settings.max_queue
        if len(prompts) > queue:
            raise InvalidRequest(
                f"{len(prompts)} prompts are more than the engine's queue holds ({queue}, "
                "max_queue); send them in several requests",
                param="prompt",
            )
        max_tokens = self.default_max_tokens if request.max_tokens is None else request.max_tokens
        if max_tokens == 0 and not request.echo:
            raise InvalidRequest(
                "max_tokens 0 returns nothing without echo: set echo to true to score the "
                "prompt, or ask for at least 1 token",
                param="max_tokens",
            )
        for prompt in prompts:
            if isinstance(prompt, str):
                self._check_length(len(prompt))
        encoded = await self._off_loop(lambda: [self._encode(p) for p in prompts])
        # Echo with logprobs: the prompt's log-probabilities too, as vLLM returns them.
        prompt_logprobs = request.logprobs if request.echo else None
        params = self._sampling(request, max(max_tokens, 1), request.logprobs, prompt_logprobs)
        generations: list[Generation] = []
        try:
            for text, prompt_ids in encoded:
                generation = await self._start(text, prompt_ids, request.model, params, "cmpl")
                generation.prompt_only = max_tokens == 0
                generations.append(generation)
        except BaseException:
            for generation in generations:
                await generation.aclose()
            raise
        return Completions(generations)

    async def start_chat(self, request: ChatCompletionRequest) -> Generation:
        messages = [m.model_dump() for m in request.messages]
        self._check_length(sum(len(m.content) for m in request.messages))
        prompt_ids = await self._off_loop(
            lambda: self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
        prompt = await self._off_loop(lambda: self.tokenizer.decode(prompt_ids))
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        max_tokens = request.max_completion_tokens or request.max_tokens or self._rest_of_context(prompt_ids)
        params = self._sampling(request, max_tokens, logprobs)
        return await self._start(prompt, list(prompt_ids), request.model, params, "chatcmpl")

    async def _observed(self, generation: Generation) -> AsyncIterator[TokenEvent]:
        """The events, measured for /metrics and logged when finished."""
        name = self.metrics.model_name
        last = generation.started
        text: list[str] = []
        async for event in generation.events:
            if generation.prompt_only:
                event = _without_token(event)
            now_ = time.monotonic()
            if not text:
                self.metrics.time_to_first_token.labels(name).observe(now_ - generation.started)
            else:
                self.metrics.inter_token_latency.labels(name).observe(now_ - last)
            last = now_
            text.append(event.text)
            if event.finish_reason is not None:
                self._finished(generation, event, "".join(text), now_)
            yield event

    def _finished(self, generation: Generation, event: TokenEvent, text: str, at: float) -> None:
        assert event.usage is not None
        name = self.metrics.model_name
        seconds = at - generation.started
        self.metrics.e2e_latency.labels(name).observe(seconds)
        self.metrics.prompt_tokens.labels(name).inc(event.usage.prompt_tokens)
        self.metrics.generation_tokens.labels(name).inc(event.usage.completion_tokens)
        self.metrics.request_success.labels(name, event.finish_reason).inc()
        adapter, _, version = (event.adapter or "base@").partition("@")
        self.metrics.adapter_requests.labels(adapter, version or "-").inc()
        self.metrics.adapter_latency.labels(adapter).observe(seconds)
        if self.completion_sink is not None:
            params = generation.params
            self.completion_sink(
                CompletionRecord(
                    id=generation.id,
                    adapter=event.adapter,
                    prompt=generation.prompt,
                    completion=text,
                    params={
                        "max_tokens": params.max_tokens, "temperature": params.temperature,
                        "top_p": params.top_p, "top_k": params.top_k, "seed": params.seed,
                        "stop": list(params.stop),
                        "presence_penalty": params.presence_penalty,
                        "frequency_penalty": params.frequency_penalty,
                        "repetition_penalty": params.repetition_penalty,
                        "min_tokens": params.min_tokens,
                        "logit_bias": dict(params.logit_bias),
                    },
                    prompt_tokens=event.usage.prompt_tokens,
                    completion_tokens=event.usage.completion_tokens,
                    latency_ms=seconds * 1000,
                    finish_reason=str(event.finish_reason),
                )
            )

    def _token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _top(self, top: dict[int, float] | None) -> dict[str, float]:
        return {self._token(t): lp for t, lp in (top or {}).items()}

    # --- responses: completions ---

    def _logging_id(self, generation: Generation) -> str | None:
        return generation.id if self.completion_sink is not None else None

    def _top_with(self, token: str, logprob: float | None, top: dict[int, float] | None) -> dict[str, float]:
        """The top alternatives and the token itself (up to logprobs + 1 entries, as in OpenAI)."""
        return {token: logprob if logprob is not None else 0.0, **self._top(top)}

    def _prompt_logprobs(
        self, out: CompletionLogprobs, generation: Generation, entries: list[TokenLogprobs] | None, k: int
    ) -> None:
        """The prompt's tokens as vLLM echoes them: the first has no log-probability (null).
        Offsets add up the tokens' decoded lengths from 0; special tokens (BOS) are not in the
        echoed text, so they take no room."""
        offset = 0
        for token_id, entry in zip(generation.prompt_ids, [None, *(entries or [])], strict=True):
            token = self._token(token_id)
            out.tokens.append(token)
            out.token_logprobs.append(entry.logprob if entry else None)
            out.text_offset.append(offset)
            offset += len(self.tokenizer.decode([token_id], skip_special_tokens=True))
            if k and out.top_logprobs is not None:
                out.top_logprobs.append(self._top_with(token, entry.logprob, entry.top) if entry else None)

    def _choice(
        self,
        request: CompletionRequest,
        index: int,
        generation: Generation,
        events: list[TokenEvent],
        *,
        first: bool = True,
        offset: int | None = None,
    ) -> CompletionChoice:
        """Choice ``index`` from ``events`` (all of them, or a stream's next one; ``first``: the
        first, which carries the echoed prompt; ``offset``: text before the events' text)."""
        generated = [] if generation.prompt_only else events
        echo = request.echo and first
        logprobs = None
        if request.logprobs is not None:
            k = request.logprobs
            logprobs = CompletionLogprobs(top_logprobs=[] if k else None)
            if echo:
                self._prompt_logprobs(logprobs, generation, events[0].prompt_logprobs, k)
            offset = len(generation.prompt) if offset is None else offset
            for e in generated:
                token = self._token(e.token_id)
                logprobs.tokens.append(token)
                logprobs.token_logprobs.append(e.logprob if e.logprob is not None else 0.0)
                logprobs.text_offset.append(offset)
                offset += len(e.text)
                if logprobs.top_logprobs is not None:
                    logprobs.top_logprobs.append(self._top_with(token, e.logprob, e.top_logprobs))
        last = events[-1]
        return CompletionChoice(
            index=index,
            text=(generation.prompt if echo else "") + "".join(e.text for e in generated),
            logprobs=logprobs,
            finish_reason=last.finish_reason,
            completion_id=self._logging_id(generation) if last.finish_reason else None,
        )

    async def completion(self, request: CompletionRequest, completions: Completions) -> CompletionResponse:
        generations = completions.generations
        events: list[list[TokenEvent]] = [[] for _ in generations]
        try:
            async with contextlib.aclosing(_merged([self._observed(g) for g in generations])) as merged:
                async for i, event in merged:
                    events[i].append(event)
        finally:
            # Cancelled (timeout, disconnect) or failed: free every row now. A read that was
            # cancelled before it started never reached its stream to close it.
            await completions.aclose()
        lasts = [e[-1] for e in events]
        return CompletionResponse(
            id=completions.id,
            created=now(),
            model=self.served_model(request.model, lasts[0].adapter),
            choices=[self._choice(request, i, g, e) for i, (g, e) in enumerate(zip(generations, events, strict=True))],
            usage=_usage(*lasts),
            completion_id=self._logging_id(generations[0]),
        )

    async def completion_chunks(self, request: CompletionRequest, completions: Completions) -> AsyncIterator[dict]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        created = now()
        generations = completions.generations
        lasts: list[TokenEvent | None] = [None] * len(generations)
        offsets = [len(g.prompt) for g in generations]  # where each choice's next text starts
        model = request.model
        async with contextlib.aclosing(_merged([self._observed(g) for g in generations])) as merged:
            async for i, e in merged:
                choice = self._choice(request, i, generations[i], [e], first=lasts[i] is None, offset=offsets[i])
                offsets[i] += len(e.text)
                lasts[i] = e
                model = self.served_model(request.model, e.adapter)
                yield CompletionResponse(
                    id=completions.id, created=created, model=model, choices=[choice],
                    completion_id=choice.completion_id,
                ).model_dump()
        if include_usage and all(lasts):
            yield CompletionResponse(
                id=completions.id, created=created, model=model, choices=[],
                usage=_usage(*(e for e in lasts if e is not None)),
            ).model_dump()

    # --- responses: chat ---

    def _chat_logprobs(self, events: list[TokenEvent]) -> ChatLogprobs:
        content = []
        for e in events:
            token = self._token(e.token_id)
            top = [TopLogprob(token=t, logprob=lp, bytes=list(t.encode())) for t, lp in self._top(e.top_logprobs).items()]
            content.append(ChatTokenLogprob(token=token, logprob=e.logprob or 0.0, bytes=list(token.encode()), top_logprobs=top))
        return ChatLogprobs(content=content)

    async def chat(self, request: ChatCompletionRequest, generation: Generation) -> ChatCompletionResponse:
        events = [e async for e in self._observed(generation)]
        last = events[-1]
        return ChatCompletionResponse(
            id=generation.id,
            created=now(),
            model=self.served_model(request.model, last.adapter),
            choices=[ChatChoice(
                message=ChatResponseMessage(content="".join(e.text for e in events)),
                logprobs=self._chat_logprobs(events) if request.logprobs else None,
                finish_reason=last.finish_reason,
            )],
            usage=_usage(last),
            completion_id=self._logging_id(generation),
        )

    async def chat_chunks(self, request: ChatCompletionRequest, generation: Generation) -> AsyncIterator[dict]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        created = now()
        first = True
        async for e in self._observed(generation):
            model = self.served_model(request.model, e.adapter)
            if first:  # OpenAI opens every chat stream with the role
                yield ChatCompletionChunk(
                    id=generation.id, created=created, model=model,
                    choices=[ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))],
                ).model_dump()
                first = False
            yield ChatCompletionChunk(
                id=generation.id, created=created, model=model,
                choices=[ChatChunkChoice(
                    delta=ChatDelta(content=e.text),
                    logprobs=self._chat_logprobs([e]) if request.logprobs else None,
                    finish_reason=e.finish_reason,
                )],
            ).model_dump()
            if e.finish_reason is not None and include_usage:
                yield ChatCompletionChunk(
                    id=generation.id, created=created, model=model, choices=[], usage=_usage(e)
                ).model_dump()


def _usage(*last: TokenEvent) -> Usage:
    """Usage of one generation, or the sum of several, from their last events."""
    usages = [event.usage for event in last]
    assert all(u is not None for u in usages)
    prompt = sum(u.prompt_tokens for u in usages if u)
    completion = sum(u.completion_tokens for u in usages if u)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _without_token(event: TokenEvent) -> TokenEvent:
    """A prompt-only request's one event: its prompt log-probabilities, no generated token."""
    assert event.usage is not None, "a prompt-only request decodes exactly one token"
    return dataclasses.replace(
        event, text="", logprob=None, top_logprobs=None, finish_reason="length",
        usage=EngineUsage(event.usage.prompt_tokens, 0),
    )


async def _merged(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Items of several async iterators as they come, each with its iterator's index. Closing
    it cancels the pending reads; the caller closes the iterators' sources (a read cancelled
    before it started leaves its iterator as it was)."""
    pending = {asyncio.ensure_future(anext(s)): i for i, s in enumerate(streams)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=pending.__getitem__):
                i = pending.pop(task)
                try:
                    item = task.result()
                except StopAsyncIteration:
                    continue
                pending[asyncio.ensure_future(anext(streams[i]))] = i
                yield i, item
    finally:
        for task in pending:
            task.cancel()
