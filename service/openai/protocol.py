"""Request and response schemas of the OpenAI-compatible endpoints.

Field names, defaults and shapes follow OpenAI's API so any OpenAI client works. Parameters
OpenAI has but loraloop does not implement are refused with a 400 naming them, never ignored
silently (every schema forbids unknown fields); ``top_k``, ``ignore_eos``,
``repetition_penalty`` and ``min_tokens`` are extensions, as in vLLM.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.text_limits import MAX_PROMPT_CHARS

FinishReason = Literal["stop", "length"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


TokenId = Annotated[int, Field(ge=0)]
Bias = Annotated[float, Field(ge=-100, le=100)]


class SamplingFields(BaseModel):
    """The sampling parameters completions and chat share."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="'base', an adapter 'name', 'name@alias' or 'name@N'.")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(-1, ge=-1, description="-1 disables top-k (extension).")
    ignore_eos: bool = Field(False, description="Generate past the end-of-sequence token (extension).")
    n: int = Field(
        1, ge=1, description="Choices to generate, up to the server's max_n; the prompt is computed "
        "once for all of them.",
    )
    best_of: int | None = Field(
        None, ge=1, description="Candidates generated per prompt (extension on chat) (at least n, at most max_n; one "
        "shared prefill), of which the n best are returned, best first: by reward_model's score, "
        "else by cumulative log-probability. Above n, not with stream.",
    )
    reward_model: str | None = Field(
        None, description="A reward adapter ('name', 'name@alias' or 'name@N') that scores the "
        "best_of candidates; each returned choice carries its score in 'reward' (extension).",
    )
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(1 << 63), le=(1 << 63) - 1, description="A 64-bit signed integer.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Subtracted once from each generated token's logit.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="Subtracted per occurrence in the output.")
    repetition_penalty: float = Field(
        1.0, gt=0, description="Divides positive / multiplies negative logits of tokens in the prompt or output; 1 is off (extension)."
    )
    min_tokens: int = Field(0, ge=0, description="No EOS or stop sequence before this many tokens (extension).")
    logit_bias: dict[TokenId, Bias] | None = Field(None, description="Token id -> bias in [-100, 100] added to its logit.")

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops


Prompt = str | list[int]  # a text, or token ids


def _is_token_ids(value: object) -> bool:
    return isinstance(value, list) and all(type(t) is int for t in value)


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]] = Field(
        description="A string, a list of strings, a list of token ids or a list of such lists; "
        "each prompt gets its own choice, in order."
    )
    max_tokens: int | None = Field(None, ge=0, description="0 (with echo) scores the prompt only.")
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = Field(False, description="Return the prompt before the completion (and its log-probabilities with logprobs).")
    suffix: str | None = Field(None, description="Not supported.")

    @field_validator("suffix")
    @classmethod
    def _unsupported(cls, value: str | None) -> str | None:
        if value not in (None, ""):
            raise ValueError("suffix is not supported")
        return value

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompts(cls, prompt: object) -> list[str] | list[list[int]]:
        """Every form OpenAI accepts, as a list of prompts (texts or token-id lists)."""
        if isinstance(prompt, str) or (_is_token_ids(prompt) and prompt):
            prompts: list = [prompt]
        elif isinstance(prompt, list) and prompt and (
            all(isinstance(p, str) for p in prompt) or all(_is_token_ids(p) for p in prompt)
        ):
            prompts = prompt
        else:
            raise ValueError(
                "prompt must be a string, a list of strings, a list of token ids or a list of "
                "token-id lists"
            )
        if any(not p for p in prompts):
            raise ValueError("prompts must not be empty")
        longest = max((len(p) for p in prompts if isinstance(p, str)), default=0)
        if longest > MAX_PROMPT_CHARS:
            raise ValueError(f"a prompt of {longest} characters is over the limit of {MAX_PROMPT_CHARS}")
        if any(t < 0 for p in prompts if not isinstance(p, str) for t in p):
            raise ValueError("token ids must be >= 0")
        return prompts

    @property
    def prompts(self) -> list[Prompt]:
        assert isinstance(self.prompt, list)  # the validator made it a list of prompts
        return list(cast(list[Prompt], self.prompt))


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=5)
    max_completion_tokens: int | None = Field(None, ge=1)

    @field_validator("messages")
    @classmethod
    def _prompt_length(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        chars = sum(len(m.content) for m in messages)  # the messages are the prompt together
        if chars > MAX_PROMPT_CHARS:
            raise ValueError(f"the messages hold {chars} characters, over the limit of {MAX_PROMPT_CHARS}")
        return messages


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    """vLLM's shape; with echo the prompt's first token has no log-probability (null)."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None
    completion_id: str | None = Field(None, description="Id of this choice's logged completion (loraloop).")
    reward: float | None = Field(
        None, description="The reward_model's score of prompt + this choice's generated text, as "
        "POST /v1/rewards gives it (with reward_model only; extension)."
    )


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    completion_id: str | None = Field(
        None, description="Id of the logged completion (choice 0's), for POST /v1/feedback (loraloop)."
    )
    completion_ids: list[str] | None = Field(
        None, description="Id of each choice's logged completion, by choice index (loraloop)."
    )


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = None


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatResponseMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None
    reward: float | None = Field(
        None, description="The reward_model's score of the templated prompt + this message, as "
        "POST /v1/rewards gives it (with reward_model only; extension)."
    )


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    completion_id: str | None = None
    completion_ids: list[str] | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    completion_id: str | None = None
