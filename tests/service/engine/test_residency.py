"""Adapter residency: single-flight loads, slots and LRU, references, pins, unload."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import Conflict, InvalidAdapter
from service.engine import SamplingParams
from service.engine.adapters import AdapterKey, AdapterManager

from .test_generation import prompt, run


def test_fifty_concurrent_first_requests_load_the_adapter_once(
    make_engine, published, peft_reference
):
    fetches = []
    real_fetch = published.fetch

    def counting_fetch(adapter: str, version: int):
        fetches.append((adapter, version))
        time.sleep(0.05)  # a slow download widens the window for duplicate loads
        return real_fetch(adapter, version)

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
    engine = make_engine(max_active_adapters=2, max_cpu_adapters=1)
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
    manager = AdapterManager(lora, loader, pool, max_cpu_adapters=max_cpu, events=events)  # type: ignore[arg-type]
    return manager, lora


class _Weights:
    kind = "policy"
    nbytes = 10


def test_manager_evicts_least_recently_used_free_slot_only():
    events = RecordedEvents()
    manager, _ = _fake_manager(slots=2, max_cpu=1, loader=lambda key: _Weights(), events=events)
    a, b, c = AdapterKey("a", 1), AdapterKey("b", 1), AdapterKey("c", 1)
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
    key = AdapterKey("x", 1)
    with ThreadPoolExecutor(16) as pool:
        futures = list(pool.map(lambda _: manager.acquire(key, "policy"), range(50)))
        gate.set()
        assert all(f.result() for f in futures)
    assert calls == [key]
    assert next(s for s in manager.status()).in_use == 50

    bad = AdapterKey("bad", 1)
    for _ in range(2):
        future = manager.acquire(bad, "policy")
        with pytest.raises(InvalidAdapter):
            future.result()
        manager.release(bad)
    assert calls.count(bad) == 2  # a failed load is not cached
    assert all(s.adapter != "bad" for s in manager.status())
