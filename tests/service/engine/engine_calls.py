"""Driving an Engine from a synchronous test: prompts of random token ids, greedy sampling,
a coroutine run to its end (or failed at a timeout, so a hang fails instead of stalling)."""

from __future__ import annotations

import asyncio
import random

from service.engine import SamplingParams, TokenEvent

GREEDY = SamplingParams(max_tokens=12, temperature=0)


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


def prompt(seed: int, length: int) -> list[int]:
    """BOS (1) then ``length - 1`` random ids of the tiny Llama's vocabulary past its specials."""
    rng = random.Random(seed)
    return [1] + [rng.randrange(4, 1000) for _ in range(length - 1)]


async def collect(engine, ids, adapter, params) -> list[TokenEvent]:
    return [event async for event in engine.generate(ids, adapter, params)]


def rows_per_pass(engine) -> list[int]:
    """A list that each forward pass of ``engine`` appends its number of rows to."""
    passes: list[int] = []
    real = engine.scheduler.decoder.hidden_parts

    def recording(parts):
        passes.append(sum(p.ids.shape[0] for p in parts))
        return real(parts)

    engine.scheduler.decoder.hidden_parts = recording
    return passes
