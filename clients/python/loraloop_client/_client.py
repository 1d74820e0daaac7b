"""``Client`` and ``AsyncClient``: the configured HTTP core plus one attribute per API area."""

from __future__ import annotations

from typing import Any

import httpx2

from loraloop_client._base import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, AsyncCore, SyncCore
from loraloop_client.resources.adapters import Adapters, AsyncAdapters
from loraloop_client.resources.feedback import AsyncFeedbackResource, FeedbackResource
from loraloop_client.resources.jobs import AsyncJobs, Jobs
from loraloop_client.resources.rewards import AsyncRewards, Rewards

_OPENAI_MISSING = "client.openai() needs the openai package: pip install 'loraloop-client[openai]'"


class Client(SyncCore):
    """A loraloop server.

    ``base_url`` defaults to ``LORALOOP_BASE_URL`` (else ``http://127.0.0.1:8000``) and
    ``api_key`` to ``LORALOOP_API_KEY``. ``timeout`` is in seconds (or an ``httpx2.Timeout``);
    ``max_retries`` bounds the retries of one call. Use it as a context manager, or ``close()``.
    """

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *,
        timeout: float | httpx2.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES, http_client: httpx2.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, http_client)
        self._attach()

    def _attach(self) -> None:
        self.adapters = Adapters(self)
        self.feedback = FeedbackResource(self)
        self.rewards = Rewards(self)
        self.jobs = Jobs(self)

    def with_options(self, *, timeout: float | httpx2.Timeout | None = None, max_retries: int | None = None) -> Client:
        """A client sharing this one's connections with another timeout or retry budget."""
        clone = self._copy_with(timeout, max_retries)
        clone._attach()
        return clone

    def openai(self, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` for this server's completions and chat (``model="name@alias"``);
        ``kwargs`` override its arguments."""
        try:
            import openai
        except ImportError as error:
            raise ImportError(_OPENAI_MISSING) from error
        return openai.OpenAI(**self.openai_kwargs(**kwargs))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient(AsyncCore):
    """The asyncio twin of :class:`Client`: the same areas, each call awaited."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *,
        timeout: float | httpx2.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES, http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, http_client)
        self._attach()

    def _attach(self) -> None:
        self.adapters = AsyncAdapters(self)
        self.feedback = AsyncFeedbackResource(self)
        self.rewards = AsyncRewards(self)
        self.jobs = AsyncJobs(self)

    def with_options(
        self, *, timeout: float | httpx2.Timeout | None = None, max_retries: int | None = None
    ) -> AsyncClient:
        clone = self._copy_with(timeout, max_retries)
        clone._attach()
        return clone

    def openai(self, **kwargs: Any) -> Any:
        """An ``openai.AsyncOpenAI`` for this server."""
        try:
            import openai
        except ImportError as error:
            raise ImportError(_OPENAI_MISSING) from error
        return openai.AsyncOpenAI(**self.openai_kwargs(**kwargs))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
