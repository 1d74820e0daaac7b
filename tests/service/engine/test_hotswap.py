"""Hot-swap: an alias moves under load; in-flight requests finish on their version."""

from __future__ import annotations

import asyncio
import logging

from core.errors import IntegrityError
from core.names import AdapterVersion
from service.engine import SamplingParams
from service.engine.hotswap import WARM_RETRY_FIRST
from tests.service.engine.engine_calls import prompt, run

LONG = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)


def _expect(peft_reference, served: str, ids: list[int], tokens: list[int]) -> None:
    # alpha@1 holds the "alpha" weights; alpha@2 is published from the "gamma" folder
    reference = peft_reference({"alpha@1": "alpha", "alpha@2": "gamma"}[served], ids, len(tokens))
    assert tokens[: len(reference)] == reference, served


def test_alias_move_under_load_switches_new_requests_only(
    make_engine, published, adapter_dirs, peft_reference
):
    engine = make_engine(max_batch_size=8)

    async def client(i: int, results: list):
        ids = prompt(100 + i, 5 + i % 4)
        completion = await engine.complete(ids, "alpha", LONG)  # bare name: @production
        results.append((ids, completion))

    async def main():
        before: list = []
        in_flight = [asyncio.create_task(client(i, before)) for i in range(6)]
        while engine.stats().running < 6:
            await asyncio.sleep(0.01)
        v2 = published.publish(adapter_dirs["gamma"], "alpha", "policy")
        published.set_alias("alpha", "production", v2.version, expected=1)
        moves = await engine.refresh_aliases()
        assert [(m.adapter, m.alias, m.old, m.new) for m in moves] == [
            ("alpha", "production", 1, 2)
        ]
        after: list = []
        await asyncio.gather(*in_flight, *[client(10 + i, after) for i in range(6)])
        return before, after

    before, after = run(main())
    assert len(before) == 6 and len(after) == 6
    for ids, completion in before:
        assert str(completion.version) == "alpha@1"
        _expect(peft_reference, "alpha@1", ids, completion.token_ids)
    for ids, completion in after:
        assert str(completion.version) == "alpha@2"
        _expect(peft_reference, "alpha@2", ids, completion.token_ids)
    statuses = {(s.adapter, s.version): s for s in engine.residency()}
    assert statuses[("alpha", 2)].aliases == ["production"]
    assert statuses[("alpha", 1)].in_use == 0


def test_polling_follows_the_alias_with_a_steady_stream_and_no_failures(
    make_engine, published, adapter_dirs, peft_reference
):
    engine = make_engine(alias_poll_seconds=0.1)
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)

    async def main():
        served: list = []
        stop = asyncio.Event()

        async def stream_of_requests(worker: int):
            i = 0
            while not stop.is_set():
                ids = prompt(1000 * worker + i, 6)
                served.append((ids, await engine.complete(ids, "alpha@production", params)))
                i += 1

        workers = [asyncio.create_task(stream_of_requests(w)) for w in range(4)]
        while len(served) < 8:
            await asyncio.sleep(0.01)
        v2 = published.publish(adapter_dirs["gamma"], "alpha", "policy")
        published.set_alias("alpha", "production", v2.version)
        while not any(str(c.version) == "alpha@2" for _, c in served[-4:]):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*workers)  # any failure would raise here
        return served

    served = run(main())
    versions = [str(c.version) for _, c in served]
    assert versions[0] == "alpha@1" and versions[-1] == "alpha@2"
    first_new = versions.index("alpha@2")
    # once the new version is served, later requests never go back to the old one
    assert "alpha@1" not in versions[first_new + 4 :]
    for ids, completion in served:
        _expect(peft_reference, str(completion.version), ids, completion.token_ids)


def test_a_version_that_fails_to_warm_holds_nothing_and_is_retried_with_backoff(
    make_engine, published, adapter_dirs, caplog
):
    engine = make_engine()
    fetches: list[tuple[str, int]] = []
    real_fetch = published.fetch
    broken = {("alpha", 2)}

    def fetch(adapter: str, version: int, manifest=None):
        fetches.append((adapter, version))
        if (adapter, version) in broken:
            raise IntegrityError(f"{adapter}@{version}: sha256 mismatch")
        return real_fetch(adapter, version, manifest)

    published.fetch = fetch
    now = [0.0]
    engine.follower.clock = lambda: now[0]
    quick = SamplingParams(max_tokens=2, temperature=0)

    async def main():
        await engine.complete(prompt(1, 4), "alpha", quick)  # alpha@production is followed
        v2 = published.publish(adapter_dirs["gamma"], "alpha", "policy")
        published.set_alias("alpha", "production", v2.version, expected=1)
        for _ in range(5):  # polls while it is broken
            assert await engine.refresh_aliases() == []
        assert fetches.count(("alpha", 2)) == 1  # not fetched again on every poll
        assert all(s.in_use == 0 for s in engine.residency())
        await engine.unload("alpha@2")  # no reference left behind: no 409
        assert (await engine.complete(prompt(2, 4), "alpha", quick)).version == AdapterVersion("alpha", 1)

        now[0] += WARM_RETRY_FIRST  # the first retry, still broken
        assert await engine.refresh_aliases() == []
        assert fetches.count(("alpha", 2)) == 2
        now[0] += WARM_RETRY_FIRST  # the backoff doubled: not yet
        assert await engine.refresh_aliases() == []
        assert fetches.count(("alpha", 2)) == 2

        broken.clear()  # the registry is repaired
        now[0] += WARM_RETRY_FIRST
        moves = await engine.refresh_aliases()
        assert [(m.old, m.new) for m in moves] == [(1, 2)]
        return await engine.complete(prompt(3, 4), "alpha", quick)

    with caplog.at_level(logging.DEBUG, logger="service.engine.hotswap"):
        served = run(main())
    assert served.version == AdapterVersion("alpha", 2)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and "cannot be loaded" in errors[0].getMessage()
