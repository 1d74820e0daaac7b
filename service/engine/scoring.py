"""Reward scoring calls: a reward adapter scores (prompt, completion) pairs on the served base.

The caller's side of ``reward.py``: checks the sequences, takes a place in the engine's queue
(scoring counts against the same ``max_queue`` as generation), loads the reward adapter and
hands a ``ScoreRequest`` to the scheduler, which scores a few rows per engine step.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from core.names import AdapterVersion, Reference
from core.reward_format import reward_input_ids
from service.engine.admission import Admission
from service.engine.engine_thread import EngineThread
from service.engine.loading import AdapterLoading, adapter_reference
from service.engine.reward import ScoreRequest
from service.engine.scheduler import Scheduler


@dataclass(eq=False)
class RewardScoring:
    tokenizer: PreTrainedTokenizerBase
    admission: Admission
    loading: AdapterLoading
    scheduler: Scheduler
    thread: EngineThread
    io: Executor  # tokenizing never runs on the caller's event loop

    async def score(
        self, reward: Reference | str, prompt: str, completions: list[str]
    ) -> list[float]:
        """Reward of each (prompt, completion) under the reward adapter ``reward``; the pair is
        tokenized by ``core.reward_format.reward_input_ids`` (the format reward training must use)."""
        sequences = await asyncio.get_running_loop().run_in_executor(  # never on the loop
            self.io, lambda: [reward_input_ids(self.tokenizer, prompt, c) for c in completions]
        )
        return await self.score_ids(reward, sequences)

    async def score_ids(self, reward: Reference | str, sequences: list[list[int]]) -> list[float]:
        """Reward of each token sequence (already formatted as the reward model reads it)."""
        if not sequences:
            return []
        self.admission.check_sequences(sequences)
        ref = adapter_reference(reward)
        with self.admission.reservation():
            manifest = await self.loading.resolve(ref)
            version = await self.loading.acquire(manifest, "reward")
            score = ScoreRequest(version, [list(s) for s in sequences], Future())
            self.scheduler.submit_score(score)  # the scheduler releases ``version`` at its end
        self.thread.wake()
        try:
            return await asyncio.wrap_future(score.future)
        except asyncio.CancelledError:
            score.future.cancel()
            raise

    async def reward_version(self, ref: Reference, param: str = "model") -> AdapterVersion:
        """The reward adapter version ``ref`` names now, checked before any work is queued:
        NotFound if there is none, InvalidRequest (on ``param``) if it is not a reward adapter.
        Scoring with the returned version scores every sequence with that one version."""
        return self.loading.check(await self.loading.resolve(ref), "reward", param)
