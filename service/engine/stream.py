"""The caller's side of one generation: an async iterator of its events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Self

from core.names import AdapterVersion
from service.engine.request import Event, Request, TokenEvent


class TokenStream:
    """The events of one generation, in order per choice; each choice's last event has
    ``finish_reason``, and the stream ends after the last choice's.

    Iterate with ``async for``. Closing it early (``aclose``, leaving ``async with``, a cancelled
    task, or dropping it) cancels the request: its batch rows are freed within one engine step.
    """

    def __init__(
        self,
        requests: list[Request],
        events: asyncio.Queue[Event],
        cancel: Callable[[list[Request]], None],
    ):
        self._requests, self._events, self._cancel = requests, events, cancel
        self._running = len(requests)  # choices not finished yet
        self._done = False

    @property
    def n(self) -> int:
        """How many choices the stream carries."""
        return len(self._requests)

    @property
    def version(self) -> AdapterVersion | None:
        """The adapter version serving this request (``name@3``), None for the base."""
        return self._requests[0].version

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> TokenEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            event = await self._events.get()
        except BaseException:  # the consumer was cancelled while waiting
            await self.aclose()
            raise
        if isinstance(event, BaseException):
            self._done = True
            raise event
        if event.finish_reason is not None:
            self._running -= 1
            self._done = self._running == 0
        return event

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._cancel(self._requests)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not self._done:  # abandoned without being closed
            self._cancel(self._requests)
