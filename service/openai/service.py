"""OpenAI completions and chat on the engine: prompts to token ids, events to OpenAI shapes.

Built once at start-up. Knows the engine and the tokenizer, nothing of HTTP: the router turns
its results into JSON or server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar, cast

from core.errors import InvalidRequest, NotFound
from core.names import BASE_MODEL, AdapterVersion, Reference, model_name, parse_model, parse_ref
from core.store import Completion
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
    Prompt,
    SamplingFields,
    TopLogprob,
    Usage,
    new_id,
    now,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Where each finished choice goes to be logged (the completion log's queue); never blocks.
CompletionSink = Callable[[Completion], None]


@dataclass(frozen=True)
class BestOf:
    """How many candidates each prompt gets, and whether the n returned are the best of them
    (``ranked``): by ``reward``'s score, or without one by cumulative log-probability."""

    candidates: int
    ranked: bool
    reward: AdapterVersion | None

    def logprobs(self, asked: int | None) -> int | None:
        """The log-probabilities the engine computes: ranked by them, each token's is needed
        (the response shows them only if they were asked for)."""
        return 0 if self.ranked and self.reward is None and asked is None else asked


@dataclass
class Generation:
    """A generation in progress: the request's events plus what the response needs.

    ``ids[i]`` is the id choice i is logged under (``ids[0]`` is also the response's ``id``)."""

    id: str
    prompt: str
    prompt_ids: list[int]
    params: SamplingParams
    events: TokenStream
    started: float
    ids: list[str] = field(default_factory=list)
    unfinished: int = field(init=False)  # choices still generating (for metrics)
    # max_tokens 0 (echo): the engine decodes its one token, which the response leaves out.
    prompt_only: bool = False
    # best_of: the candidates are ranked and only the best returned, so a candidate is logged
    # once it is chosen (``unlogged`` holds them till then); ``reward`` ranks them if set.
    ranked: bool = False
    reward: AdapterVersion | None = None
    unlogged: dict[int, Completion] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.ids:
            self.ids = [self.id]
        self.unfinished = self.events.n

    @property
    def n(self) -> int:
        return self.events.n

    async def aclose(self) -> None:
        await self.events.aclose()


@dataclass
class Generations:
    """A completions request in progress: one generation per prompt, in the prompts' order,
    each of n choices. Choice ``p * n + j`` is choice j of prompt p (vLLM's numbering). Its id
    is the first generation's."""

    generations: list[Generation]

    @property
    def id(self) -> str:
        return self.generations[0].id

    @property
    def n(self) -> int:
        return self.generations[0].n

    async def aclose(self) -> None:
        for generation in self.generations:
            await generation.aclose()


class OpenAIService:
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
        # The router's deadline for a request, adapter loading included.
        self.request_timeout_seconds = engine.settings.request_timeout_seconds
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

    def adapter_of(self, model: str) -> Reference | None:
        """The request's ``model``, parsed once here (InvalidName -> 400 before any work):
        None for the base model, else the adapter reference the engine resolves."""
        return parse_model(model, self.engine.base_info.model_id, param="model")

    def served_model(self, requested: str, version: AdapterVersion | None) -> str:
        """The response's ``model``: the version that served (``name@N``), or the base model
        as it was asked for (``base`` or its id)."""
        if version is not None:
            return model_name(version)
        return requested if requested == BASE_MODEL else self.engine.base_info.model_id

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

    async def _start(
        self, prompt: str, prompt_ids: list[int], best_of: BestOf, params: SamplingParams,
        prefix: str, adapter: Reference | None,
    ) -> Generation:
        started = time.monotonic()
        n = best_of.candidates
        events = await self.engine.submit(prompt_ids, adapter, params, n)
        ids = [new_id(prefix) for _ in range(n)]
        return Generation(
            ids[0], prompt, prompt_ids, params, events, started, ids,
            ranked=best_of.ranked, reward=best_of.reward,
        )

    async def _best_of(self, request: SamplingFields) -> BestOf:
        """The request's best_of and reward_model, checked before anything is queued, so a bad
        reward_model costs no generation."""
        best_of = request.n if request.best_of is None else request.best_of
        if best_of < request.n:
            raise InvalidRequest(
                f"best_of ({best_of}) must be at least n ({request.n}): the n returned choices "
                "are the best of best_of candidates; raise best_of or lower n",
                param="best_of",
            )
        if best_of > self.engine.max_choices:
            raise InvalidRequest(
                f"best_of must be at most {self.engine.max_choices} (max_n and max_batch_size "
                "bound it)",
                param="best_of",
            )
        if request.stream and (best_of > request.n or request.reward_model is not None):
            raise InvalidRequest(
                "stream cannot be used with best_of above n or with reward_model: the best "
                "candidates are known only once all have ended; set stream to false",
                param="stream",
            )
        reward = None
        if request.reward_model is not None:
            ref = parse_ref(request.reward_model, param="reward_model")
            try:
                reward = await self.engine.reward_version(ref, param="reward_model")
            except NotFound as e:
                raise NotFound(
                    f"reward_model: {e}; name a registered reward adapter (GET /v1/adapters "
                    "lists them)"
                ) from None
        return BestOf(best_of, best_of > request.n or reward is not None, reward)

    def _encode(self, prompt: Prompt) -> tuple[str, list[int]]:
        """(text, token ids) of a prompt given as either."""
        if isinstance(prompt, str):
            return prompt, self.tokenizer(prompt)["input_ids"]
        if max(prompt) >= self.engine.vocab_size:
            raise InvalidRequest("the prompt holds token ids outside the vocabulary", param="prompt")
        text = self.tokenizer.decode(prompt, skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence of ids decodes to one string
        return text, list(prompt)

    async def start_completion(self, request: CompletionRequest) -> Generations:
        """One generation (of n choices) per prompt; all are queued, or none (an error closes
        the others)."""
        adapter = self.adapter_of(request.model)
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
        best_of = await self._best_of(request)
        params = self._sampling(request, max(max_tokens, 1), best_of.logprobs(request.logprobs), prompt_logprobs)
        generations: list[Generation] = []
        try:
            for text, prompt_ids in encoded:
                generation = await self._start(text, prompt_ids, best_of, params, "cmpl", adapter)
                generation.prompt_only = max_tokens == 0
                generations.append(generation)
        except BaseException:
            for generation in generations:
                await generation.aclose()
            raise
        return Generations(generations)

    def _encode_chat(self, messages: list[dict]) -> tuple[str, list[int]]:
        """(text, token ids) of a templated conversation, in one trip to the tokenizer pool."""
        # tokenize=True, return_dict=False: the ids of one conversation; decode gives one string.
        prompt_ids = cast(list[int], self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        ))
        return cast(str, self.tokenizer.decode(prompt_ids)), prompt_ids

    async def start_chat(self, request: ChatCompletionRequest) -> Generation:
        adapter = self.adapter_of(request.model)
        messages = [m.model_dump() for m in request.messages]
        self._check_length(sum(len(m.content) for m in request.messages))
        prompt, prompt_ids = await self._off_loop(lambda: self._encode_chat(messages))
        best_of = await self._best_of(request)
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        max_tokens = request.max_completion_tokens or request.max_tokens or self._rest_of_context(prompt_ids)
        params = self._sampling(request, max_tokens, best_of.logprobs(logprobs))
        return await self._start(prompt, list(prompt_ids), best_of, params, "chatcmpl", adapter)

    async def _observed(self, generation: Generation) -> AsyncIterator[TokenEvent]:
        """The events, measured for /metrics; each choice is logged when it finishes."""
        name = self.metrics.model_name
        # the labelled series once per request, not a locked lookup per token
        inter_token = self.metrics.inter_token_latency.labels(name)
        last = [generation.started] * generation.n
        text: list[list[str]] = [[] for _ in range(generation.n)]
        first = True
        async for event in generation.events:
            if generation.prompt_only:
                event = _without_token(event)
            now_ = time.monotonic()
            i = event.index
            if first:
                self.metrics.time_to_first_token.labels(name).observe(now_ - generation.started)
                first = False
            elif text[i]:
                inter_token.observe(now_ - last[i])
            last[i] = now_
            text[i].append(event.text)
            if event.finish_reason is not None:
                self._finished(generation, event, "".join(text[i]), now_)
            yield event

    def _finished(self, generation: Generation, event: TokenEvent, text: str, at: float) -> None:
        """Choice ``event.index`` ended: counted, and logged as a completion of its own. The
        request's prompt and its end count once, whatever its n."""
        assert event.usage is not None
        name = self.metrics.model_name
        seconds = at - generation.started
        generation.unfinished -= 1
        if event.index == 0:
            self.metrics.prompt_tokens.labels(name).inc(event.usage.prompt_tokens)
        self.metrics.generation_tokens.labels(name).inc(event.usage.completion_tokens)
        if generation.unfinished == 0:
            self.metrics.e2e_latency.labels(name).observe(seconds)
            self.metrics.request_success.labels(name, event.finish_reason).inc()
            self.metrics.request_served(event.version, seconds)
        if self.engine.settings.log_prompts:  # opt-in: prompts and replies may be personal data
            log.info("completion %s by %s: prompt %r, text %r", generation.ids[event.index],
                     model_name(event.version), generation.prompt, text)
        if self.completion_sink is not None:
            params = generation.params
            completion = Completion(
                id=generation.ids[event.index],
                prompt=generation.prompt,
                text=text,
                version=event.version,
                sampling_params={
                    "max_tokens": params.max_tokens, "temperature": params.temperature,
                    "top_p": params.top_p, "top_k": params.top_k, "seed": params.seed,
                    "stop": list(params.stop),
                    "presence_penalty": params.presence_penalty,
                    "frequency_penalty": params.frequency_penalty,
                    "repetition_penalty": params.repetition_penalty,
                    "min_tokens": params.min_tokens,
                    "logit_bias": dict(params.logit_bias),
                    "finish_reason": str(event.finish_reason),
                    **self._ranking(generation),
                },
                prompt_tokens=event.usage.prompt_tokens,
                completion_tokens=event.usage.completion_tokens,
                latency_ms=seconds * 1000,
            )
            if generation.ranked:
                generation.unlogged[event.index] = completion
            else:
                self.completion_sink(completion)

    @staticmethod
    def _ranking(generation: Generation) -> dict[str, object]:
        """How a best-of choice was chosen, logged with it."""
        if not generation.ranked:
            return {}
        reward = {"reward_model": model_name(generation.reward)} if generation.reward else {}
        return {"best_of": generation.n, **reward}

    async def _best(
        self, generation: Generation, candidates: list[list[TokenEvent]], n: int
    ) -> list[tuple[int, float | None]]:
        """The ``n`` best of a ranked generation's candidates, best first, as (candidate index,
        reward): by the reward version's score of prompt + text (what POST /v1/rewards gives),
        else by cumulative log-probability (vLLM's and OpenAI's best_of). Only these are logged
        as completions: the others were never served, so no feedback can point at them."""
        if generation.reward is not None:
            texts = ["".join(e.text for e in events) for events in candidates]
            scores = await self.engine.score(generation.reward, generation.prompt, texts)
        else:
            scores = [sum(e.logprob or 0.0 for e in events) for events in candidates]
        best = sorted(range(len(candidates)), key=lambda j: -scores[j])[:n]
        if self.completion_sink is not None:
            for j in best:
                self.completion_sink(generation.unlogged.pop(j))
        return [(j, scores[j] if generation.reward is not None else None) for j in best]

    def _token(self, token_id: int) -> str:
        text = self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert isinstance(text, str)  # one sequence of ids decodes to one string
        return text

    def _top(self, top: dict[int, float] | None) -> dict[str, float]:
        return {self._token(t): lp for t, lp in (top or {}).items()}

    # --- responses: completions ---

    def _logging_id(self, generation: Generation, index: int = 0) -> str | None:
        return generation.ids[index] if self.completion_sink is not None else None

    async def _by_choice(self, generation: Generation) -> list[list[TokenEvent]]:
        """Every event of a finished generation, grouped by choice index."""
        by_choice: list[list[TokenEvent]] = [[] for _ in range(generation.n)]
        async for e in self._observed(generation):
            by_choice[e.index].append(e)
        return by_choice

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
        """Choice ``index`` from ``events`` of one of ``generation``'s choices (all of them, or
        a stream's next one; ``first``: the first, which carries the echoed prompt; ``offset``:
        text before the events' text)."""
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
            # each choice's last chunk carries the id its completion is logged under
            completion_id=self._logging_id(generation, last.index) if last.finish_reason else None,
        )

    async def completion(self, request: CompletionRequest, completions: Generations) -> CompletionResponse:
        # k candidates per prompt: n, or best_of of which the n best are returned
        generations, k = completions.generations, completions.n
        events: list[list[TokenEvent]] = [[] for _ in range(len(generations) * k)]
        try:
            async with contextlib.aclosing(_merged([self._observed(g) for g in generations])) as merged:
                async for p, event in merged:
                    events[p * k + event.index].append(event)
        finally:
            # Cancelled (timeout, disconnect) or failed: free every row now. A read that was
            # cancelled before it started never reached its stream to close it.
            await completions.aclose()
        lasts = [e[-1] for e in events]
        chosen: list[tuple[int, int, float | None]] = []  # (prompt, candidate, reward)
        for p, generation in enumerate(generations):
            candidates = events[p * k : (p + 1) * k]
            best = await self._best(generation, candidates, request.n) if generation.ranked else [
                (j, None) for j in range(k)
            ]
            chosen += [(p, j, reward) for j, reward in best]
        choices = []
        for i, (p, j, reward) in enumerate(chosen):
            choice = self._choice(request, i, generations[p], events[p * k + j])
            choice.reward = reward
            choices.append(choice)
        ids = [c.completion_id for c in choices if c.completion_id] or None
        return CompletionResponse(
            id=completions.id,
            created=now(),
            model=self.served_model(request.model, lasts[0].version),
            choices=choices,
            # every candidate was generated, so all count (as OpenAI counts best_of)
            usage=_total([_usage(*lasts[p * k : (p + 1) * k]) for p in range(len(generations))]),
            completion_id=ids[0] if ids else None,
            completion_ids=ids,
        )

    async def completion_chunks(
        self, request: CompletionRequest, completions: Generations
    ) -> AsyncGenerator[CompletionResponse, None]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        created = now()
        generations, n = completions.generations, completions.n
        lasts: list[TokenEvent | None] = [None] * (len(generations) * n)
        # where each choice's next text starts
        offsets = [len(g.prompt) for g in generations for _ in range(n)]
        model = request.model
        async with contextlib.aclosing(_merged([self._observed(g) for g in generations])) as merged:
            async for p, e in merged:
                i = p * n + e.index
                if lasts[i] is not None and _carries_nothing(e, request.logprobs is not None):
                    continue  # (a first chunk may carry the echoed prompt)
                choice = self._choice(request, i, generations[p], [e], first=lasts[i] is None, offset=offsets[i])
                offsets[i] += len(e.text)
                lasts[i] = e
                model = self.served_model(request.model, e.version)
                yield CompletionResponse(
                    id=completions.id, created=created, model=model, choices=[choice],
                    completion_id=choice.completion_id,
                )
        if include_usage and all(e is not None for e in lasts):
            ended = [e for e in lasts if e is not None]
            yield CompletionResponse(
                id=completions.id, created=created, model=model, choices=[],
                usage=_total([_usage(*ended[p * n : (p + 1) * n]) for p in range(len(generations))]),
            )

    async def sample(
        self, model: str, prompt: str, *, n: int, max_tokens: int, temperature: float, seed: int
    ) -> list[tuple[str, str]]:
        """``n`` logged completions of ``prompt`` by ``model`` from one request (one prefill),
        as (completion id, text) in choice order. Needs the completion log (the ids name
        logged completions), as generated labeling pairs do."""
        request = CompletionRequest(
            model=model, prompt=prompt, max_tokens=max_tokens, temperature=temperature, seed=seed, n=n,
        )
        response = await self.completion(request, await self.start_completion(request))
        samples = []
        for choice in sorted(response.choices, key=lambda c: c.index):
            assert choice.completion_id is not None, "sample() needs the completion log"
            samples.append((choice.completion_id, choice.text))
        return samples

    # --- responses: chat ---

    def _chat_logprobs(self, events: list[TokenEvent]) -> ChatLogprobs:
        content = []
        for e in events:
            token = self._token(e.token_id)
            top = [TopLogprob(token=t, logprob=lp, bytes=list(t.encode())) for t, lp in self._top(e.top_logprobs).items()]
            content.append(ChatTokenLogprob(token=token, logprob=e.logprob or 0.0, bytes=list(token.encode()), top_logprobs=top))
        return ChatLogprobs(content=content)

    async def chat(self, request: ChatCompletionRequest, generation: Generation) -> ChatCompletionResponse:
        by_choice = await self._by_choice(generation)
        lasts = [events[-1] for events in by_choice]
        best = await self._best(generation, by_choice, request.n) if generation.ranked else [
            (j, None) for j in range(generation.n)
        ]
        ids = [generation.ids[j] for j, _ in best] if self.completion_sink is not None else None
        return ChatCompletionResponse(
            id=generation.id,
            created=now(),
            model=self.served_model(request.model, lasts[0].version),
            choices=[
                ChatChoice(
                    index=i,
                    message=ChatResponseMessage(content="".join(e.text for e in by_choice[j])),
                    logprobs=self._chat_logprobs(by_choice[j]) if request.logprobs else None,
                    finish_reason=by_choice[j][-1].finish_reason,
                    reward=reward,
                )
                for i, (j, reward) in enumerate(best)
            ],
            usage=_usage(*lasts),  # every candidate was generated, so all count
            completion_id=ids[0] if ids else None,
            completion_ids=ids,
        )

    async def chat_chunks(
        self, request: ChatCompletionRequest, generation: Generation
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        created = now()
        opened: set[int] = set()
        lasts: list[TokenEvent] = []
        async for e in self._observed(generation):
            model = self.served_model(request.model, e.version)
            if e.index not in opened:  # OpenAI opens every choice's stream with the role
                yield ChatCompletionChunk(
                    id=generation.id, created=created, model=model,
                    choices=[ChatChunkChoice(index=e.index, delta=ChatDelta(role="assistant", content=""))],
                )
                opened.add(e.index)
            if _carries_nothing(e, request.logprobs):
                continue
            yield ChatCompletionChunk(
                id=generation.id, created=created, model=model,
                choices=[ChatChunkChoice(
                    index=e.index,
                    delta=ChatDelta(content=e.text),
                    logprobs=self._chat_logprobs([e]) if request.logprobs else None,
                    finish_reason=e.finish_reason,
                )],
                completion_id=self._logging_id(generation, e.index) if e.finish_reason else None,
            )
            if e.finish_reason is not None:
                lasts.append(e)
                if include_usage and len(lasts) == generation.n:
                    yield ChatCompletionChunk(
                        id=generation.id, created=created, model=model, choices=[], usage=_usage(*lasts)
                    )


def _carries_nothing(event: TokenEvent, logprobs: bool | None) -> bool:
    """A token that adds no text yet (part of a character, or a token the tokenizer decodes to
    nothing), asked for no log-probability and ends nothing: streamed, its chunk would carry
    nothing, so none is sent (its text comes with a later token's chunk; ``transformers serve``
    does the same). Counted in usage all the same."""
    return not event.text and event.finish_reason is None and not logprobs


def _total(usages: list[Usage]) -> Usage:
    """The usage of several prompts' generations: their sum."""
    prompt = sum(u.prompt_tokens for u in usages)
    completion = sum(u.completion_tokens for u in usages)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _usage(*lasts: TokenEvent) -> Usage:
    """A request's usage from each choice's last event: the prompt counts once, as OpenAI
    counts it."""
    usages = [e.usage for e in lasts if e.usage is not None]
    assert len(usages) == len(lasts), "every choice's last event carries its usage"
    prompt = usages[0].prompt_tokens
    completion = sum(u.completion_tokens for u in usages)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _without_token(event: TokenEvent) -> TokenEvent:
    """A prompt-only request's one event: its prompt log-probabilities, no generated token."""
    assert event.usage is not None, "a prompt-only request decodes exactly one token"
    return dataclasses.replace(
        event, text="", logprob=None, top_logprobs=None, finish_reason="length",
        usage=EngineUsage(event.usage.prompt_tokens, 0),
    )


async def _merged(streams: list[AsyncIterator[T]]) -> AsyncGenerator[tuple[int, T], None]:
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
