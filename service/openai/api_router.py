"""/v1/completions, /v1/chat/completions and /v1/models, as OpenAI serves them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from core.errors import LoraloopError, TimedOut
from service.auth import InferCaller
from service.errors import domain_error_response
from service.openai.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelList,
)
from service.openai.serving import Generation, OpenAIServing
from service.state import ServiceState, get_state

log = logging.getLogger(__name__)
router = APIRouter(tags=["openai"])
StateDep = Annotated[ServiceState, Depends(get_state)]
T = TypeVar("T")

DISCONNECT_POLL_SECONDS = 0.25


CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left; nobody reads it


async def _unless_disconnected(request: Request, work: Awaitable[T], timeout: float) -> T | Response:
    """Await ``work``; cancel it (freeing its batch row) if the client goes away or time runs out."""
    task = asyncio.ensure_future(work)
    try:
        async with asyncio.timeout(timeout):
            while True:
                done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    log.info("client disconnected; generation cancelled")
                    return Response(status_code=CLIENT_CLOSED_REQUEST)
    except TimeoutError:
        raise TimedOut(f"the generation exceeded the request timeout of {timeout:g} s") from None
    finally:
        task.cancel()


def _sse(chunks: AsyncGenerator[dict, None], generation: Generation, timeout: float) -> StreamingResponse:
    """Server-sent events in OpenAI's framing; an error mid-stream is sent as an event.
    However the stream ends, the generation is closed, which frees its batch row."""

    async def body() -> AsyncIterator[str]:
        try:
            async with asyncio.timeout(timeout):
                async for chunk in chunks:
                    yield f"data: {json.dumps(chunk)}\n\n"
        except TimeoutError:
            timed_out = TimedOut(f"the generation exceeded the request timeout of {timeout:g} s")
            yield f"data: {domain_error_response(timed_out).body.decode()}\n\n"
        except LoraloopError as e:
            yield f"data: {domain_error_response(e).body.decode()}\n\n"
        finally:
            # On a client disconnect this task is cancelled, and anyio re-raises the
            # cancellation at every await: shield the close so the engine frees the row now.
            with anyio.CancelScope(shield=True):
                await chunks.aclose()
                await generation.events.aclose()  # closing ``chunks`` leaves inner iterators open
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.post("/v1/completions", response_model=CompletionResponse)
async def create_completion(body: CompletionRequest, request: Request, _: InferCaller, state: StateDep):
    """Complete a prompt with the base model or an adapter (OpenAI-compatible)."""
    serving: OpenAIServing = state.openai
    generation = await serving.start_completion(body)
    timeout = state.settings.request_timeout_seconds
    if body.stream:
        return _sse(serving.completion_chunks(body, generation), generation, timeout)
    return await _unless_disconnected(request, serving.completion(body, generation), timeout)


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, _: InferCaller, state: StateDep):
    """Answer a conversation with the base model or an adapter (OpenAI-compatible)."""
    serving: OpenAIServing = state.openai
    generation = await serving.start_chat(body)
    timeout = state.settings.request_timeout_seconds
    if body.stream:
        return _sse(serving.chat_chunks(body, generation), generation, timeout)
    return await _unless_disconnected(request, serving.chat(body, generation), timeout)


@router.get("/v1/models", response_model=ModelList)
async def list_models(_: InferCaller, state: StateDep) -> ModelList:
    """The base model and every adapter with a production alias (OpenAI's model list)."""
    return await asyncio.to_thread(state.adapters.model_list, state.openai)
