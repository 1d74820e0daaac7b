"""What may enter the engine: the limits on one call, and the bounded queue.

Checks run on the caller's thread before any work is queued, so a bad call fails with a clear
InvalidRequest and costs nothing. The queue bound counts generations and reward scorings alike::

    queued = reserved (between these checks and the scheduler) + waiting + scoring  < max_queue

A call over the bound gets Overloaded (429); a call after ``close`` gets EngineClosed (503).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from core.errors import InvalidRequest, Overloaded, Unavailable
from core.settings import Settings
from service.engine.sampling import SamplingParams
from service.engine.scheduler import Scheduler


class EngineClosed(Unavailable):
    """The engine shut down while the request was pending (503: another replica may serve)."""


class Admission:
    def __init__(
        self,
        settings: Settings,
        scheduler: Scheduler,
        *,
        max_context: int,
        vocab_size: int,
        row_tokens: int,
    ):
        self.settings = settings
        self.scheduler = scheduler
        self.max_context = max_context  # the model's context, in tokens
        self.vocab_size = vocab_size
        self.row_tokens = row_tokens  # what one KV-cache row holds
        self.reserved = 0  # requests between the queue check and the scheduler's queue
        self.closing = False
        self._lock = threading.Lock()  # guards reserved and closing

    # --- limits ---

    @property
    def max_choices(self) -> int:
        """Most choices one generation may have: each takes a KV-cache row."""
        return min(self.settings.max_n, self.settings.max_batch_size)

    def check_n(self, n: int) -> None:
        limit = self.max_choices
        if not isinstance(n, int) or not 1 <= n <= limit:
            raise InvalidRequest(
                f"n must be between 1 and {limit} (max_n and max_batch_size bound it)", param="n"
            )

    def check_prompt(self, prompt_ids: list[int], params: SamplingParams) -> None:
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
        if len(prompt_ids) + params.max_tokens > self.row_tokens:
            raise InvalidRequest(
                f"prompt + max_tokens = {len(prompt_ids) + params.max_tokens} exceeds the "
                f"{self.row_tokens} tokens a KV-cache row holds (kv_cache_row_tokens); "
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

    def check_sequences(self, sequences: list[list[int]]) -> None:
        """Sequences to score: each 1..context valid token ids."""
        for ids in sequences:
            if not ids or len(ids) > self.max_context or max(ids) >= self.vocab_size:
                raise InvalidRequest("each scored sequence needs 1..context valid token ids")

    # --- the queue ---

    @contextmanager
    def reservation(self) -> Iterator[None]:
        """A place in the queue while the body hands the call to the scheduler (whose queue
        then counts it). Raises EngineClosed after ``close``, Overloaded when full."""
        with self._lock:
            if self.closing:
                raise EngineClosed("the engine is shutting down")
            scheduler = self.scheduler
            queued = self.reserved + scheduler.num_waiting + len(scheduler.score_requests)
            if queued >= self.settings.max_queue:
                raise Overloaded(
                    f"{self.settings.max_queue} requests are already waiting; retry later"
                )
            self.reserved += 1
        try:
            yield
        finally:
            with self._lock:
                self.reserved -= 1

    def close(self) -> None:
        """Admit nothing from now on."""
        with self._lock:
            self.closing = True
