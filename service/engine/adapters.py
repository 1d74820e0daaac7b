"""Adapter residency: slots -> host-memory LRU -> local disk cache -> registry.

Everything is keyed by ``AdapterKey(adapter, version)``; a version never changes, so a cached
copy is never stale. Rules:

- ``acquire`` takes a reference and makes sure the weights are in host memory; concurrent first
  acquirers of one key share a single load (single flight), whatever their number.
- ``place`` puts an acquired adapter into a LoRA slot (engine thread only): a free slot, else the
  least recently used slot whose adapter has no references and is not pinned.
- An adapter with references (requests waiting or running on it) is never evicted from its
  slot nor from host memory; neither is a pinned one.
- Host memory keeps at most ``max_cpu_adapters`` adapters beyond those in use or pinned (LRU).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

from core.base.info import BaseModelInfo
from core.errors import Conflict, InvalidAdapter, InvalidRequest
from service.engine.events import EngineEvents, NoEvents
from service.engine.lora import LoraModel
from service.engine.weights import AdapterWeights

log = logging.getLogger(__name__)

Tier = Literal["slot", "host", "disk"]


class AdapterKey(NamedTuple):
    adapter: str
    version: int

    def __str__(self) -> str:
        return f"{self.adapter}@{self.version}"


class ManifestLike(Protocol):
    adapter: str
    version: int
    kind: str
    base_fingerprint: str
    rank: int


@dataclass
class AdapterStatus:
    """One adapter version the engine knows, for the admin API and metrics."""

    adapter: str
    version: int
    kind: str
    tier: Tier
    pinned: bool
    in_use: int  # requests holding it
    slot: int | None
    last_used: float  # unix time
    nbytes: int | None
    aliases: list[str] = field(default_factory=list)  # e.g. ["production"], filled by the engine


@dataclass
class _Entry:
    key: AdapterKey
    kind: str
    weights: AdapterWeights | None = None
    loading: Future | None = None
    slot: int | None = None
    refs: int = 0
    pinned: bool = False
    last_used: float = 0.0
    nbytes: int | None = None

    @property
    def tier(self) -> Tier:
        return "slot" if self.slot is not None else "host" if self.weights is not None else "disk"


# Loads one version into host memory: fetch (disk cache or registry) + read + validate.
Loader = Callable[[AdapterKey], AdapterWeights]


class AdapterManager:
    """Reference-counted residency of adapter versions; thread-safe except ``place``/``drop``
    which only the engine thread calls (they touch the LoRA slots)."""

    def __init__(
        self,
        lora: LoraModel,
        loader: Loader,
        executor: Executor,
        *,
        max_cpu_adapters: int,
        events: EngineEvents | None = None,
    ):
        self.lora = lora
        self.loader = loader
        self.executor = executor
        self.max_cpu_adapters = max_cpu_adapters
        self.events: EngineEvents = events or NoEvents()
        self._lock = threading.Lock()
        self._entries: dict[AdapterKey, _Entry] = {}
        self._slots: list[AdapterKey | None] = [None] * (lora.num_slots + 1)  # index 0: base
        self.loads = 0  # host loads started (for tests and metrics)

    # --- any thread ---

    def acquire(self, key: AdapterKey, kind: str) -> Future:
        """Take a reference on ``key`` and return a future done once its weights are resident
        (host memory or a slot). The caller must ``release(key)`` exactly once, even if the
        future fails."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(key, kind)
            if entry.kind != kind:
                raise InvalidRequest(f"{key} is a {entry.kind} adapter, not a {kind} adapter")
            entry.refs += 1
            entry.last_used = time.time()
            if entry.weights is not None or entry.slot is not None:
                self.events.adapter_hit(key.adapter, "slot" if entry.slot is not None else "host")
                done: Future = Future()
                done.set_result(entry)
                return done
            if entry.loading is None:  # the first acquirer starts the one load
                self.loads += 1
                self.events.adapter_miss(key.adapter)
                entry.loading = self.executor.submit(self._load, entry)
            return entry.loading

    def _load(self, entry: _Entry) -> _Entry:
        started = time.monotonic()
        try:
            weights = self.loader(entry.key)
            if weights.kind != entry.kind:
                raise InvalidAdapter(f"{entry.key} is a {weights.kind} adapter")
        except BaseException:
            with self._lock:
                entry.loading = None
            raise
        with self._lock:
            entry.weights, entry.loading, entry.nbytes = weights, None, weights.nbytes
            self._trim_host()
        self.events.adapter_loaded(entry.key.adapter, time.monotonic() - started)
        log.info("loaded adapter %s into host memory (%d bytes)", entry.key, weights.nbytes)
        return entry

    def release(self, key: AdapterKey) -> None:
        with self._lock:
            entry = self._entries[key]
            assert entry.refs > 0, key
            entry.refs -= 1
            entry.last_used = time.time()
            never_loaded = entry.nbytes is None and entry.loading is None
            if entry.refs == 0 and never_loaded:  # its load failed: the next acquire retries
                del self._entries[key]
            self._trim_host()

    def set_pinned(self, key: AdapterKey, pinned: bool) -> None:
        """Pin (never evicted) or unpin an adapter; pinning needs a reference held."""
        with self._lock:
            entry = self._entries[key]
            if pinned and not entry.pinned:
                pinned_now = sum(e.pinned for e in self._entries.values())
                if pinned_now >= self.lora.num_slots - 1:
                    raise Conflict(
                        f"cannot pin {key}: {pinned_now} adapters are pinned and one of the "
                        f"{self.lora.num_slots} slots must stay free for the others"
                    )
            entry.pinned = pinned
            self._trim_host()

    def status(self) -> list[AdapterStatus]:
        with self._lock:
            return [
                AdapterStatus(
                    e.key.adapter,
                    e.key.version,
                    e.kind,
                    e.tier,
                    e.pinned,
                    e.refs,
                    e.slot,
                    e.last_used,
                    e.nbytes,
                )
                for e in sorted(self._entries.values(), key=lambda e: e.key)
            ]

    def slot_of(self, key: AdapterKey) -> int | None:
        with self._lock:
            entry = self._entries.get(key)
            return entry.slot if entry else None

    def _trim_host(self) -> None:
        """Drop host copies beyond max_cpu_adapters, least recently used first (lock held).

        Only copies without references and not pinned go; a copy whose adapter sits in a slot
        can go too (the slot holds the weights), it is then reloaded from disk if evicted."""
        held = [e for e in self._entries.values() if e.weights is not None]
        excess = len(held) - self.max_cpu_adapters
        if excess <= 0:
            return
        for entry in sorted(held, key=lambda e: e.last_used):
            if excess <= 0:
                break
            if entry.refs == 0 and not entry.pinned:
                entry.weights = None
                excess -= 1
                self.events.adapter_evicted(entry.key.adapter, "host")
                if entry.slot is None:
                    log.debug("adapter %s left host memory", entry.key)

    # --- engine thread only ---

    def place(self, key: AdapterKey) -> int | None:
        """The slot holding ``key`` (acquired, loaded), copying it into one if needed; None if
        every slot is held by an adapter in use or pinned (try again after a step)."""
        with self._lock:
            entry = self._entries[key]
            assert entry.refs > 0 or entry.pinned, f"{key} placed without a reference"
            entry.last_used = time.time()
            if entry.slot is not None:
                return entry.slot
            assert entry.weights is not None, f"{key} placed before its load finished"
            slot = self._free_slot()
            if slot is None:
                return None
            self.lora.load(slot, entry.weights)
            self._slots[slot], entry.slot = key, slot
            self._trim_host()
            log.debug("adapter %s -> slot %d", key, slot)
            return slot

    def _free_slot(self) -> int | None:
        for slot in range(1, len(self._slots)):
            if self._slots[slot] is None:
                return slot
        victims = [
            self._entries[k]
            for k in self._slots[1:]
            if k is not None and self._entries[k].refs == 0 and not self._entries[k].pinned
        ]
        if not victims:
            return None
        victim = min(victims, key=lambda e: e.last_used)
        self._evict_slot(victim)
        return self._free_slot()

    def _evict_slot(self, entry: _Entry) -> None:
        assert entry.slot is not None and entry.refs == 0 and not entry.pinned
        slot, entry.slot = entry.slot, None
        self._slots[slot] = None
        self.lora.clear(slot)
        self.events.adapter_evicted(entry.key.adapter, "slot")
        log.debug("adapter %s evicted from slot %d", entry.key, slot)

    def drop(self, key: AdapterKey) -> None:
        """Unload ``key`` from its slot and host memory (disk cache stays). Conflict if in use."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            if entry.refs:
                raise Conflict(f"{key} is in use by {entry.refs} request(s); unload it later")
            entry.pinned = False
            if entry.slot is not None:
                self._evict_slot(entry)
            entry.weights = None
            if entry.loading is None:
                del self._entries[key]


def check_manifest(manifest: ManifestLike, base: BaseModelInfo, max_rank: int) -> None:
    """Refuse a version made for another base or above the rank limit before fetching it."""
    if manifest.base_fingerprint != base.fingerprint:
        raise InvalidAdapter(
            f"{manifest.adapter}@{manifest.version} was made for another base model "
            f"(fingerprint {manifest.base_fingerprint[:12]}, served {base.fingerprint[:12]})"
        )
    if manifest.rank > max_rank:
        raise InvalidAdapter(
            f"{manifest.adapter}@{manifest.version} has rank {manifest.rank} > "
            f"max_lora_rank {max_rank}"
        )
