"""OpenAI completions and chat on the engine: prompts to token ids, events to OpenAI shapes.

Built once at start-up. Knows the engine and the tokenizer, nothing of HTTP: the router turns
its results into JSON or server-sent events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar, cast

from core.errors import InvalidRequest
from core.names import parse_ref
from service.engine import Engine, SamplingParams, TokenEvent, TokenStream
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

    def _sampling(self, request: SamplingFields, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens or self.default_max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=max(request.top_k, 0),
            seed=request.seed,
            stop=tuple(request.stop or ()),
            logprobs=logprobs,
            ignore_eos=request.ignore_eos,
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

    async def start_completion(self, request: CompletionRequest) -> Generation:
        prompt = request.prompt
        assert isinstance(prompt, str)  # the protocol validator reduced it to one string
        self._check_length(len(prompt))
        prompt_ids = await self._off_loop(lambda: self.tokenizer(prompt)["input_ids"])
        params = self._sampling(request, request.max_tokens, request.logprobs)
        return await self._start(prompt, prompt_ids, request.model, params, "cmpl")

    async def start_chat(self, request: ChatCompletionRequest) -> Generation:
        messages = [m.model_dump() for m in request.messages]
        self._check_length(sum(len(m.content) for m in request.messages))
        # tokenize=True, return_dict=False: the ids of one conversation; decode gives one string.
        prompt_ids = cast(list[int], await self._off_loop(
            lambda: self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        ))
        prompt = cast(str, await self._off_loop(lambda: self.tokenizer.decode(prompt_ids)))
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
                    },
                    prompt_tokens=event.usage.prompt_tokens,
                    completion_tokens=event.usage.completion_tokens,
                    latency_ms=seconds * 1000,
                    finish_reason=str(event.finish_reason),
                )
            )

    def _token(self, token_id: int) -> str:
        text = self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert isinstance(text, str)  # one sequence of ids decodes to one string
        return text

    def _top(self, top: dict[int, float] | None) -> dict[str, float]:
        return {self._token(t): lp for t, lp in (top or {}).items()}

    # --- responses: completions ---

    def _logging_id(self, generation: Generation) -> str | None:
        return generation.id if self.completion_sink is not None else None

    async def completion(self, request: CompletionRequest, generation: Generation) -> CompletionResponse:
        events = [e async for e in self._observed(generation)]
        last = events[-1]
        assert last.usage is not None
        logprobs = None
        if request.logprobs is not None:
            logprobs = CompletionLogprobs()
            offset = len(generation.prompt)
            for e in events:
                logprobs.tokens.append(self._token(e.token_id))
                logprobs.token_logprobs.append(e.logprob if e.logprob is not None else 0.0)
                logprobs.text_offset.append(offset)
                offset += len(e.text)
            if request.logprobs:
                logprobs.top_logprobs = [self._top(e.top_logprobs) for e in events]
        return CompletionResponse(
            id=generation.id,
            created=now(),
            model=self.served_model(request.model, last.adapter),
            choices=[CompletionChoice(text="".join(e.text for e in events), logprobs=logprobs,
                                      finish_reason=last.finish_reason)],
            usage=_usage(last),
            completion_id=self._logging_id(generation),
        )

    async def completion_chunks(self, request: CompletionRequest, generation: Generation) -> AsyncGenerator[dict, None]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        created = now()
        async for e in self._observed(generation):
            logprobs = None
            if request.logprobs is not None:
                logprobs = CompletionLogprobs(
                    tokens=[self._token(e.token_id)],
                    token_logprobs=[e.logprob if e.logprob is not None else 0.0],
                    top_logprobs=[self._top(e.top_logprobs)] if request.logprobs else None,
                )
            chunk = CompletionResponse(
                id=generation.id, created=created, model=self.served_model(request.model, e.adapter),
                choices=[CompletionChoice(text=e.text, logprobs=logprobs, finish_reason=e.finish_reason)],
                completion_id=self._logging_id(generation) if e.finish_reason else None,
            )
            yield chunk.model_dump()
            if e.finish_reason is not None and include_usage:
                yield CompletionResponse(
                    id=generation.id, created=created, model=chunk.model, choices=[], usage=_usage(e)
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

    async def chat_chunks(self, request: ChatCompletionRequest, generation: Generation) -> AsyncGenerator[dict, None]:
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


def _usage(event: TokenEvent) -> Usage:
    assert event.usage is not None
    return Usage(
        prompt_tokens=event.usage.prompt_tokens,
        completion_tokens=event.usage.completion_tokens,
        total_tokens=event.usage.total_tokens,
    )
