"""A step that raises fails every request of it at once, and each returns what it holds."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.engine import SamplingParams
from tests.service.engine.engine_calls import prompt, run


@pytest.mark.parametrize("failing_call", [1, 2], ids=["prefill", "decode"])
def test_a_step_whose_sampling_raises_fails_all_its_requests_at_once(make_engine, failing_call):
    engine = make_engine()
    real_choose = engine.scheduler._choose
    calls = {"n": 0}

    def flaky_choose(logits, requests):  # the first call chooses the prefill's first tokens
        calls["n"] += 1
        if calls["n"] == failing_call:
            raise RuntimeError("probability tensor contains inf or nan")
        return real_choose(logits, requests)

    engine.scheduler._choose = flaky_choose
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)

    async def consume(stream) -> BaseException | None:
        try:
            async for _ in stream:
                pass
        except RuntimeError as e:
            return e
        return None

    async def main():
        for adapter in ("alpha", "beta"):
            await engine.load(adapter)
        # Hold the engine thread between two steps while the three requests arrive, so that
        # they are admitted into one prefill group.
        held = threading.Event()
        engine.scheduler.commands.put(lambda: held.wait(10))
        try:
            streams = [await engine.submit(prompt(i, 6), a, params) for i, a in enumerate(("alpha", "beta", None))]
        finally:
            held.set()
        # A hang (no event) would end in wait_for's TimeoutError, not in an answer.
        return await asyncio.wait_for(asyncio.gather(*(consume(s) for s in streams)), timeout=20)

    errors = run(main())
    assert [str(e) for e in errors] == ["probability tensor contains inf or nan"] * 3
    assert all(s.in_use == 0 for s in engine.residency()), engine.residency()
    stats = engine.stats()
    assert stats.finished["error"] == 3 and stats.running == 0 and stats.waiting == 0
    after = run(engine.complete(prompt(9, 6), "alpha", params))  # the engine keeps serving
    assert after.usage.completion_tokens == 8
