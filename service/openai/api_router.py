"""/v1/completions and /v1/chat/completions, as OpenAI serves them (/v1/models: service.models)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from core.errors import LoraloopError, TimedOut
from service.auth import InferCaller
from service.errors import domain_error_response, internal_error_response
from service.openai.arrivals import arrived
from service.openai.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
)
from service.openai.service import Generation, Generations, OpenAIService
from service.openapi import ErrorResponse, errors, event_stream

log = logging.getLogger(__name__)
router = APIRouter(tags=["openai"])
T = TypeVar("T")
Started = TypeVar("Started", Generation, Generations)

DISCONNECT_POLL_SECONDS = 0.25


async def get_openai(request: Request) -> OpenAIService:
    return request.app.state.services.openai


OpenAIDep = Annotated[OpenAIService, Depends(get_openai)]


CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left; nobody reads it


def _timed_out(timeout: float) -> TimedOut:
    return TimedOut(f"the request exceeded the request timeout of {timeout:g} s")


async def _unless_disconnected(request: Request, work: Awaitable[T], deadline: float, timeout: float) -> T | Response:
    """Await ``work``; cancel it (freeing its batch row, or its wait for an adapter) if the
    client goes away or the request's ``deadline`` (loop time) passes."""
    task = asyncio.ensure_future(work)
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    log.info("client disconnected; request cancelled")
                    return Response(status_code=CLIENT_CLOSED_REQUEST)
    except TimeoutError:
        raise _timed_out(timeout) from None
    finally:
        task.cancel()


async def _start(request: Request, start: Awaitable[Started], deadline: float, timeout: float) -> Started | Response:
    """Resolve the adapter, load it and queue the generation, under the request's deadline and
    disconnect watch: a load from the registry may take long."""
    task = asyncio.ensure_future(start)
    try:
        result = await _unless_disconnected(request, task, deadline, timeout)
    except BaseException:
        await _abandon(task)
        raise
    finally:
        arrived(request)
    if isinstance(result, Response):
        await _abandon(task)
    return result


async def _abandon(task: asyncio.Future[Started]) -> None:
    """The request was given up just as its generation was queued: free its rows now."""
    if task.done() and not task.cancelled() and task.exception() is None:
        await task.result().aclose()


def _sse(
    chunks: AsyncGenerator[BaseModel, None], generation: Generation | Generations, deadline: float, timeout: float
) -> StreamingResponse:
    """Server-sent events in OpenAI's framing; an error mid-stream is sent as an event.
    However the stream ends, the generation is closed, which frees its batch row."""

    async def body() -> AsyncIterator[str]:
        try:
            async with asyncio.timeout_at(deadline):
                async for chunk in chunks:
                    # pydantic's serializer (Rust), once per token: no dict, no json.dumps
                    yield f"data: {chunk.model_dump_json()}\n\n"
        except TimeoutError:
            yield f"data: {bytes(domain_error_response(_timed_out(timeout)).body).decode()}\n\n"
        except LoraloopError as e:
            yield f"data: {bytes(domain_error_response(e).body).decode()}\n\n"
        except Exception:  # a failed engine step: the client still gets an error event
            log.exception("generation failed mid-stream")
            yield f"data: {bytes(internal_error_response().body).decode()}\n\n"
        finally:
            # On a client disconnect this task is cancelled, and anyio re-raises the
            # cancellation at every await: shield the close so the engine frees the row now.
            with anyio.CancelScope(shield=True):
                await chunks.aclose()
                await generation.aclose()  # closing ``chunks`` leaves inner iterators open
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.post(
    "/v1/completions", response_model=CompletionResponse,
    responses=errors(404, 422, 502, 504) | event_stream(CompletionResponse, ErrorResponse),
)
async def create_completion(body: CompletionRequest, request: Request, _: InferCaller, serving: OpenAIDep):
    """Complete a prompt with the base model or an adapter (OpenAI-compatible)."""
    timeout = serving.request_timeout_seconds
    deadline = asyncio.get_running_loop().time() + timeout  # covers adapter loading too
    generation = await _start(request, serving.start_completion(body), deadline, timeout)
    if isinstance(generation, Response):
        return generation
    if body.stream:
        return _sse(serving.completion_chunks(body, generation), generation, deadline, timeout)
    return await _unless_disconnected(request, serving.completion(body, generation), deadline, timeout)


@router.post(
    "/v1/chat/completions", response_model=ChatCompletionResponse,
    responses=errors(404, 422, 502, 504) | event_stream(ChatCompletionChunk, ErrorResponse),
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, _: InferCaller, serving: OpenAIDep
):
    """Answer a conversation with the base model or an adapter (OpenAI-compatible)."""
    timeout = serving.request_timeout_seconds
    deadline = asyncio.get_running_loop().time() + timeout  # covers adapter loading too
    generation = await _start(request, serving.start_chat(body), deadline, timeout)
    if isinstance(generation, Response):
        return generation
    if body.stream:
        return _sse(serving.chat_chunks(body, generation), generation, deadline, timeout)
    return await _unless_disconnected(request, serving.chat(body, generation), deadline, timeout)

