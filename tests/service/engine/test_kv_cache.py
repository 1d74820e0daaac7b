"""The engine's own KV cache and decoder: rows join and leave in place, a full cache makes
newcomers wait, a longer row grows it, and n choices of one prompt share one prefill."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import InvalidRequest
from service.engine import SamplingParams
from tests.service.engine.engine_calls import GREEDY, collect, prompt, run


def test_generation_never_calls_the_transformers_forward_or_its_cache_arguments(
    make_engine, peft_reference
):
    # the engine runs the decoder layers itself: a transformers release that renames or drops
    # `past_key_values`/`cache` (or breaks the model's forward) cannot change its outputs
    engine = make_engine()

    def removed(*args, **kwargs):
        raise AssertionError("the engine called the model's forward")

    engine.model.forward = removed

    async def main():
        return await asyncio.gather(
            engine.complete(prompt(1, 7), "beta", GREEDY),
            engine.complete(prompt(2, 4), None, GREEDY),
        )

    beta, base = run(main())
    assert beta.token_ids == peft_reference("beta", prompt(1, 7), GREEDY.max_tokens)
    assert base.token_ids == peft_reference(None, prompt(2, 4), GREEDY.max_tokens)


def test_rows_join_and_leave_without_moving_the_running_rows_cache(make_engine, peft_reference):
    engine = make_engine(max_batch_size=4)
    cache = engine.kv_cache
    long = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
    seen: dict[str, object] = {}

    async def main():
        stream = await engine.submit(prompt(1, 6), "delta", long)
        events = [await stream.__anext__()]  # running in its row
        row = stream._requests[0].row
        seen["storage"] = cache.keys[0].data_ptr()
        seen["prompt_keys"] = cache.keys[0][row, :, :6].clone()
        # others join and leave while it runs
        await asyncio.gather(
            *[
                engine.complete(prompt(10 + i, 3 + i), name, SamplingParams(max_tokens=2 + i, temperature=0))
                for i, name in enumerate(["alpha", None, "gamma", "beta", None])
            ]
        )
        assert stream._requests[0].row == row  # never moved
        assert cache.keys[0].data_ptr() == seen["storage"]  # never reallocated or compacted
        assert cache.keys[0][row, :, :6].equal(seen["prompt_keys"])
        events += [e async for e in stream]
        return [e.token_id for e in events]

    tokens = run(main())
    reference = peft_reference("delta", prompt(1, 6), 40)
    assert tokens[: len(reference)] == reference


def test_a_decode_step_computes_only_its_running_rows_and_stays_exact(make_engine, peft_reference):
    # two short requests leave holes among the cache rows of two long ones: a decode step
    # must carry one token per running row, not one per cache row up to the highest in use
    engine = make_engine(max_batch_size=4)
    scheduler = engine.scheduler
    steps: list[tuple[int, list[int]]] = []  # decode-only passes: tokens, running cache rows

    def count(module, args, out):
        if scheduler.prefill is None:  # a pass with no prompt chunk in it
            steps.append((args[0].numel(), sorted(r.row for r in scheduler.running)))

    engine.model.model.embed_tokens.register_forward_hook(count)
    work = [(prompt(20, 5), "alpha", 2), (prompt(21, 5), "beta", 20),
            (prompt(22, 5), None, 2), (prompt(23, 5), "gamma", 20)]

    async def main():
        return await asyncio.gather(*[
            engine.complete(ids, name, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
            for ids, name, n in work
        ])

    done = run(main())
    with_holes = [rows for _, rows in steps if rows != list(range(len(rows)))]
    assert with_holes  # the case this test is about happened
    assert all(tokens == len(rows) for tokens, rows in steps), steps
    for (ids, name, n), completion in zip(work, done, strict=True):
        assert completion.token_ids == peft_reference(name, ids, n)


def test_a_full_cache_makes_newcomers_wait_then_serves_them_exactly(make_engine, peft_reference):
    engine = make_engine(max_batch_size=2)
    params = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
    specs = [("alpha", prompt(1, 5)), ("beta", prompt(2, 9)), (None, prompt(3, 4)), ("gamma", prompt(4, 7))]

    async def main():
        return await asyncio.gather(*[engine.complete(ids, name, params) for name, ids in specs])

    for (name, ids), completion in zip(specs, run(main()), strict=True):
        reference = peft_reference(name, ids, 10)
        assert completion.token_ids[: len(reference)] == reference, name
    assert engine.kv_cache.free_rows == 2


def test_a_row_longer_than_any_before_grows_the_cache_and_stays_exact(make_engine, peft_reference):
    engine = make_engine(prefill_chunk_tokens=32)
    before = engine.kv_cache.columns
    short = SamplingParams(max_tokens=50, temperature=0, ignore_eos=True)
    longer = SamplingParams(max_tokens=60, temperature=0, ignore_eos=True)

    async def main():
        first = asyncio.create_task(collect(engine, prompt(1, 8), "beta", short))
        while engine.stats().running == 0:
            await asyncio.sleep(0.005)
        grown = await engine.complete(prompt(2, 150), "alpha", longer)  # 210 > 128 columns
        return [e.token_id for e in await first], grown.token_ids

    first, grown = run(main())
    assert engine.kv_cache.columns > before >= 8 + 50
    for name, ids, n, got in (("beta", prompt(1, 8), 50, first), ("alpha", prompt(2, 150), 60, grown)):
        reference = peft_reference(name, ids, n)
        assert got[: len(reference)] == reference, name


def test_a_request_longer_than_a_cache_row_is_refused_naming_the_setting(make_engine):
    engine = make_engine(kv_cache_row_tokens=32)
    with pytest.raises(InvalidRequest, match="kv_cache_row_tokens"):
        run(engine.complete(prompt(1, 20), None, SamplingParams(max_tokens=13)))
    assert run(engine.complete(prompt(1, 20), None, SamplingParams(max_tokens=12))).usage


# --- n choices of one prompt ---


def test_n_choices_share_one_prefill_and_greedy_ones_equal_peft(make_engine, peft_reference):
    engine = make_engine()
    ids = prompt(7, 11)
    before = engine.stats().prompt_tokens
    choices = run(engine.complete_choices(ids, "beta", GREEDY, n=3))
    assert engine.stats().prompt_tokens - before == len(ids)  # computed once, not 3 times
    expected = peft_reference("beta", ids, GREEDY.max_tokens)
    assert [c.index for c in choices] == [0, 1, 2]
    assert all(c.token_ids == expected for c in choices)
    assert all(c.usage.prompt_tokens == len(ids) and str(c.version) == "beta@1" for c in choices)
    assert engine.kv_cache.free_rows == engine.kv_cache.rows
    assert all(s.in_use == 0 for s in engine.residency())  # every choice returned its reference


def test_n_seeded_choices_are_reproducible_and_differ(make_engine):
    engine = make_engine()
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=1234)

    async def main():
        first = await engine.complete_choices(prompt(3, 6), "alpha", params, n=4)
        crowded = await asyncio.gather(
            engine.complete_choices(prompt(3, 6), "alpha", params, n=4),
            engine.complete(prompt(4, 9), "gamma", SamplingParams(max_tokens=16, temperature=1.0)),
        )
        alone = await engine.complete(prompt(3, 6), "alpha", params)
        return first, crowded[0], alone

    first, again, alone = run(main())
    tokens = [c.token_ids for c in first]
    assert tokens == [c.token_ids for c in again]
    assert len({tuple(t) for t in tokens}) > 1  # the choices are different samples
    assert tokens[0] == alone.token_ids  # choice 0 draws as the same seed alone does


def test_n_choices_stream_by_index_and_cancel_together(make_engine):
    engine = make_engine(max_batch_size=4)
    long = SamplingParams(max_tokens=300, temperature=0.8, ignore_eos=True)

    async def main():
        stream = await engine.submit(prompt(1, 5), "alpha", long, n=3)
        indexes = set()
        async for event in stream:
            indexes.add(event.index)
            if len(indexes) == 3:
                break
        await stream.aclose()
        for _ in range(200):
            if engine.stats().running == 0:
                return indexes
            await asyncio.sleep(0.01)
        return None

    assert run(main()) == {0, 1, 2}
    assert engine.kv_cache.free_rows == 4
    assert all(s.in_use == 0 for s in engine.residency())


def test_n_beyond_max_n_or_the_batch_is_refused(make_engine):
    engine = make_engine(max_batch_size=4, max_n=8)
    with pytest.raises(InvalidRequest, match="n must be between 1 and 4"):
        run(engine.complete_choices(prompt(1, 5), None, GREEDY, n=5))
    engine = make_engine(max_batch_size=8, max_n=2)
    with pytest.raises(InvalidRequest, match="n must be between 1 and 2"):
        run(engine.complete_choices(prompt(1, 5), None, GREEDY, n=3))
    assert engine.stats().waiting == 0
