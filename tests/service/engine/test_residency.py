"""Adapter residency: single-flight loads, slots and LRU, references, pins, unload."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import Conflict, InvalidAdapter
from core.names import AdapterVersion
from service.engine import SamplingParams
from service.engine.adapters import AdapterManager
from service.engine.scheduler import SLOT_WAIT_LIMIT
from tests.service.engine.engine_calls import prompt, run


def test_fifty_concurrent_first_requests_load_the_adapter_once(
    make_engine, published, peft_reference
):
    fetches = []
    real_fetch = published.fetch

    def counting_fetch(adapter: str, version: int, manifest=None):
        fetches.append((adapter, version))
        time.sleep(0.05)  # a slow download widens the window for duplicate loads
        return real_fetch(adapter, version, manifest)

    published.fetch = counting_fetch
    engine = make_engine(max_batch_size=16)
    params = SamplingParams(max_tokens=3, temperature=0)

    async def main():
        return await asyncio.gather(
            *[engine.complete(prompt(7, 6), "delta", params) for _ in range(50)]
        )

    completions = run(main())
    assert fetches == [("delta", 1)]
    assert engine.adapters.loads == 1
    expected = peft_reference("delta", prompt(7, 6), 3)
    assert all(c.token_ids == expected for c in completions)
    [status] = engine.residency()
    assert (status.adapter, status.version, status.tier, status.in_use) == ("delta", 1, "slot", 0)
    assert status.aliases == ["production"]


def test_more_adapters_than_slots_never_evicts_one_in_use(make_engine, peft_reference):
    # 2 slots, 4 adapters wanted at once: requests wait for a slot instead of stealing one
    engine = make_engine(max_active_adapters=2, max_host_adapters=1)
    params = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
    names = ["alpha", "beta", "gamma", "delta", "alpha", None, "gamma", "beta"]

    async def main():
        return await asyncio.gather(
            *[engine.complete(prompt(30 + i, 4 + i), name, params) for i, name in enumerate(names)]
        )

    completions = run(main())
    for i, (name, completion) in enumerate(zip(names, completions, strict=True)):
        reference = peft_reference(name, prompt(30 + i, 4 + i), 10)
        assert completion.token_ids[: len(reference)] == reference, name
    statuses = engine.residency()
    assert sum(s.tier == "slot" for s in statuses) == 2
    assert all(s.in_use == 0 for s in statuses)
    assert sum(s.tier == "host" for s in statuses) <= 1


def test_pin_keeps_an_adapter_in_its_slot_and_unload_refuses_while_in_use(make_engine):
    engine = make_engine(max_active_adapters=2)
    quick = SamplingParams(max_tokens=2, temperature=0)

    async def main():
        pinned = await engine.pin("alpha")
        assert pinned.pinned and pinned.tier == "slot"
        for name in ["beta", "gamma", "delta"]:  # churn through the other slot
            await engine.complete(prompt(1, 4), name, quick)
        alpha = next(s for s in engine.residency() if s.adapter == "alpha")
        assert alpha.tier == "slot" and alpha.slot == pinned.slot
        with pytest.raises(Conflict):
            await engine.pin("beta")  # a second pin would leave no slot for the others

        stream = await engine.submit(
            prompt(2, 4), "delta", SamplingParams(max_tokens=50, temperature=0, ignore_eos=True)
        )
        await stream.__anext__()
        with pytest.raises(Conflict):
            await engine.unload("delta")
        await stream.aclose()
        await engine.pin("alpha", pinned=False)
        await engine.unload("alpha")
        loaded = await engine.load("gamma@1")
        return loaded

    loaded = run(main())
    assert loaded.tier == "slot" and not loaded.pinned
    assert "alpha" not in {s.adapter for s in engine.residency()}


class RecordedEvents:
    """The EngineEvents the manager reports, in order."""

    def __init__(self):
        self.seen: list[tuple] = []

    def __getattr__(self, name):
        return lambda *args: self.seen.append((name, *args[:2]))


def _fake_manager(slots: int, max_cpu: int, loader, events=None):
    class FakeLora:  # stands in for LoraModel's slot API: num_slots, load, clear
        num_slots = slots

        def __init__(self):
            self.loaded: dict[int, object] = {}

        def load(self, slot, weights):
            self.loaded[slot] = weights

        def clear(self, slot):
            self.loaded.pop(slot, None)

    lora = FakeLora()
    pool = ThreadPoolExecutor(8)
    manager = AdapterManager(lora, loader, pool, max_host_adapters=max_cpu, events=events)  # type: ignore[arg-type]
    return manager, lora


class _Weights:
    kind = "policy"
    nbytes = 10


def test_manager_evicts_least_recently_used_free_slot_only():
    events = RecordedEvents()
    manager, _ = _fake_manager(slots=2, max_cpu=1, loader=lambda key: _Weights(), events=events)
    a, b, c = AdapterVersion("a", 1), AdapterVersion("b", 1), AdapterVersion("c", 1)
    for key in (a, b):
        manager.acquire(key, "policy").result()
        assert manager.place(key) is not None
    manager.acquire(c, "policy").result()
    assert manager.place(c) is None  # a and b are in use
    manager.release(a)
    time.sleep(0.01)
    manager.release(b)  # now both free; a is the least recently used
    slot = manager.place(c)
    assert slot is not None and manager.slot_of(a) is None and manager.slot_of(b) is not None
    tiers = {(s.adapter): s.tier for s in manager.status()}
    assert tiers == {"a": "disk", "b": "slot", "c": "slot"}
    assert [e for e in events.seen if e[0] == "adapter_miss"] == [("adapter_miss", a) for a in "abc"]
    assert ("adapter_evicted", "a", "slot") in events.seen
    assert ("adapter_evicted", "b", "slot") not in events.seen
    assert sum(e[0] == "adapter_loaded" for e in events.seen) == 3


def test_manager_single_flight_under_thread_contention_and_failed_loads_retry():
    calls = []
    gate = threading.Event()

    def loader(key):
        calls.append(key)
        gate.wait(5)
        if key.adapter == "bad":
            raise InvalidAdapter("broken")
        return _Weights()

    manager, _ = _fake_manager(slots=2, max_cpu=4, loader=loader)
    key = AdapterVersion("x", 1)
    with ThreadPoolExecutor(16) as pool:
        futures = list(pool.map(lambda _: manager.acquire(key, "policy"), range(50)))
        gate.set()
        assert all(f.result() for f in futures)
    assert calls == [key]
    assert next(s for s in manager.status()).in_use == 50

    bad = AdapterVersion("bad", 1)
    for _ in range(2):
        future = manager.acquire(bad, "policy")
        with pytest.raises(InvalidAdapter):
            future.result()
        manager.release(bad)
    assert calls.count(bad) == 2  # a failed load is not cached
    assert all(s.adapter != "bad" for s in manager.status())


def test_cancelling_one_waiter_leaves_the_shared_load_to_the_others():
    gate = threading.Event()
    calls = []

    def loader(key):
        calls.append(key)
        return _Weights()

    manager, _ = _fake_manager(slots=2, max_cpu=4, loader=loader)
    busy = [manager.executor.submit(gate.wait, 5) for _ in range(8)]  # the load stays queued
    key = AdapterVersion("x", 1)
    impatient, patient = manager.acquire(key, "policy"), manager.acquire(key, "policy")
    assert impatient.cancel()  # a caller's timeout
    manager.release(key)
    gate.set()
    assert patient.result(timeout=5).key == key
    manager.release(key)
    assert manager.acquire(key, "policy").result(timeout=5).key == key  # not poisoned
    manager.release(key)
    assert calls == [key] and all(f.result() for f in busy)


def test_a_timeout_around_a_request_whose_load_is_queued_does_not_poison_the_version(
    make_engine, published
):
    gate = threading.Event()
    real_fetch = published.fetch

    def slow_fetch(adapter: str, version: int, manifest=None):
        if adapter != "judge":
            gate.wait(10)  # four slow downloads fill the four load threads
        return real_fetch(adapter, version, manifest)

    published.fetch = slow_fetch
    engine = make_engine(max_active_adapters=8)
    params = SamplingParams(max_tokens=3, temperature=0)

    async def main():
        policies = [
            asyncio.create_task(engine.complete(prompt(i, 5), name, params))
            for i, name in enumerate(["alpha", "beta", "gamma", "delta"])
        ]
        while engine.adapters.loads < 4:
            await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):  # judge's load waits behind them: the caller gives up
            await asyncio.wait_for(engine.score("judge", "a prompt", ["an answer"]), 0.2)
        gate.set()
        scores = await engine.score("judge", "a prompt", ["an answer"])
        return scores, await asyncio.gather(*policies)

    scores, completions = run(main())
    assert len(scores) == 1 and all(c.usage.completion_tokens == 3 for c in completions)
    assert all(s.in_use == 0 for s in engine.residency())


def test_host_copies_never_exceed_max_host_adapters_while_requests_wait(
    make_engine, peft_reference
):
    # 4 adapters wanted at once, room for 1 host copy: they load in turn, never all at once
    engine = make_engine(max_active_adapters=2, max_host_adapters=1)
    lock = threading.Lock()
    counts = {"alive": 0, "loading": 0, "peak": 0}
    real_loader = engine.adapters.loader

    def gone():
        with lock:
            counts["alive"] -= 1

    def counting_loader(key):
        with lock:
            counts["loading"] += 1
            counts["peak"] = max(counts["peak"], counts["alive"] + counts["loading"])
        weights = real_loader(key)
        with lock:
            counts["loading"] -= 1
            counts["alive"] += 1
        weakref.finalize(weights, gone)
        return weights

    engine.adapters.loader = counting_loader
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    names = ["alpha", "beta", "gamma", "delta", "alpha", None, "gamma", "beta", "delta"]

    async def main():
        return await asyncio.gather(
            *[engine.complete(prompt(50 + i, 5), name, params) for i, name in enumerate(names)]
        )

    completions = run(main())
    for i, (name, completion) in enumerate(zip(names, completions, strict=True)):
        reference = peft_reference(name, prompt(50 + i, 5), 6)
        assert completion.token_ids[: len(reference)] == reference, name
    assert counts["peak"] == 1
    assert engine.adapters.host_copies() <= 1


def test_a_request_waiting_for_a_slot_is_admitted_while_resident_adapters_stay_busy(
    make_engine,
):
    # 2 slots kept referenced by a steady stream on alpha and beta; gamma must still get in
    engine = make_engine(max_active_adapters=2, max_batch_size=16)
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)

    def staggered(worker: int) -> SamplingParams:  # so the stream's requests never end together
        return SamplingParams(max_tokens=5 + 3 * worker, temperature=0, ignore_eos=True)

    async def main():
        stop = asyncio.Event()
        served = {"alpha": 0, "beta": 0}

        async def stream_of_requests(name: str, worker: int):
            i = 0
            while not stop.is_set():
                await engine.complete(prompt(100 * worker + i, 5), name, staggered(worker))
                served[name] += 1
                i += 1

        workers = [
            asyncio.create_task(stream_of_requests(name, w))
            for w, name in enumerate(["alpha", "beta"] * 6)
        ]
        while min(served.values()) < 4:  # both adapters resident and busy
            await asyncio.sleep(0.01)
        try:  # its wait is bounded: SLOT_WAIT_LIMIT, then the running rows drain
            gamma = await asyncio.wait_for(
                engine.complete(prompt(7, 5), "gamma", params), SLOT_WAIT_LIMIT + 4
            )
            during = dict(served)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        return gamma, during

    gamma, during = run(main())
    assert str(gamma.version) == "gamma@1" and gamma.usage.completion_tokens == 8
    assert min(during.values()) >= 4
