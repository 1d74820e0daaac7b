"""Adapter residency: slots -> host-memory LRU -> local disk cache -> registry.

Everything is keyed by ``AdapterVersion(adapter, version)``; a version never changes, so a cached
copy is never stale. Rules:

- ``acquire`` takes a reference and returns the caller's own future, done once the weights are
  resident (host memory or a slot). Concurrent first acquirers of one key share a single load
  (single flight); cancelling one caller's future cancels only that caller's wait.
- Host memory holds at most ``max_host_adapters`` copies, loads in progress included. A load
  that finds no room waits in a FIFO until a copy can go: one without references and not
  pinned, or one whose adapter sits in a slot (the slot holds the weights), least recently
  used first. A copy that is referenced and not yet in a slot never goes.
- ``place`` puts an acquired adapter into a LoRA slot (engine thread only): a free slot, else the
  least recently used slot whose adapter has no references and is not pinned. The copy into the
  slot runs without the lock, which the event loop also takes.
- An adapter with references (requests running on it) is never evicted from its slot; neither
  is a pinned one.
- A load that fails or whose callers all left leaves nothing behind: the next acquire loads again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from core.adapters import AdapterKind, Tier
from core.base.info import BaseModelInfo
from core.errors import Conflict, InvalidAdapter, InvalidRequest, LoraloopError
from core.names import AdapterVersion
from service.engine.events import EngineEvents, NoEvents
from service.engine.lora import LoraModel
from service.engine.weights import AdapterWeights

log = logging.getLogger(__name__)

class ManifestLike(Protocol):
    """What check_manifest reads of a manifest (read-only: Manifest is frozen)."""

    @property
    def adapter(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def base_fingerprint(self) -> str: ...
    @property
    def rank(self) -> int: ...


@dataclass
class AdapterStatus:
    """One adapter version the engine knows, for the admin API and metrics."""

    adapter: str
    version: int
    kind: AdapterKind
    tier: Tier
    pinned: bool
    in_use: int  # requests holding it
    slot: int | None
    last_used: float  # unix time
    nbytes: int | None
    aliases: list[str] = field(default_factory=list)  # e.g. ["production"], filled by the engine


@dataclass(eq=False)
class _Entry:
    key: AdapterVersion
    kind: AdapterKind
    weights: AdapterWeights | None = None
    loading: bool = False  # a load of it runs on the executor
    queued: bool = False  # a load of it waits for room in host memory
    waiters: list[Future] = field(default_factory=list)  # one future per acquire during a load
    slot: int | None = None
    copying: bool = False  # its weights are being copied into a slot: the copy must stay
    refs: int = 0
    pinned: bool = False
    last_used: float = 0.0
    nbytes: int | None = None

    @property
    def tier(self) -> Tier:
        return "slot" if self.slot is not None else "host" if self.weights is not None else "disk"

    @property
    def droppable(self) -> bool:
        """Whether its host copy may go to make room (the lock held)."""
        if self.weights is None or self.copying:
            return False
        return self.slot is not None or (self.refs == 0 and not self.pinned)


# Loads one version into host memory: fetch (disk cache or registry) + read + validate.
Loader = Callable[[AdapterVersion], AdapterWeights]


class LoadCancelled(LoraloopError):
    """The load of an adapter was cancelled before it ran (the engine is shutting down)."""


class AdapterManager:
    """Reference-counted residency of adapter versions; thread-safe except ``place``/``drop``
    which only the engine thread calls (they touch the LoRA slots)."""

    def __init__(
        self,
        lora: LoraModel,
        loader: Loader,
        executor: Executor,
        *,
        max_host_adapters: int,
        events: EngineEvents | None = None,
    ):
        assert max_host_adapters >= 1, "a load needs room for one host copy"
        self.lora = lora
        self.loader = loader
        self.executor = executor
        self.max_host_adapters = max_host_adapters
        self.events: EngineEvents = events or NoEvents()
        self._lock = threading.Lock()
        self._entries: dict[AdapterVersion, _Entry] = {}
        self._slots: list[AdapterVersion | None] = [None] * (lora.num_slots + 1)  # index 0: base
        self._queue: deque[_Entry] = deque()  # loads waiting for room in host memory (FIFO)
        self._to_copy: deque[_Entry] = deque()  # slots reserved, weights not copied yet
        self.loads = 0  # host loads started (for tests and metrics)

    # --- any thread ---

    def acquire(self, key: AdapterVersion, kind: AdapterKind) -> Future:
        """Take a reference on ``key`` and return a future of its own, done once the weights
        are resident (host memory or a slot). The caller must ``release(key)`` exactly once,
        even if the future fails or is cancelled; cancelling it never stops the shared load."""
        waiter: Future = Future()
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
                waiter.set_result(entry)
                return waiter
            entry.waiters.append(waiter)
            if not (entry.loading or entry.queued):  # the first acquirer asks for the one load
                self.events.adapter_miss(key.adapter)
                entry.queued = True
                self._queue.append(entry)
                self._start_loads()
        return waiter

    def _start_loads(self) -> None:
        """Start queued loads, in order, while host memory has room (lock held)."""
        while self._queue:
            entry = self._queue[0]
            if entry.refs == 0:  # every caller left before it started: nothing to load
                self._queue.popleft()
                entry.queued = False
                self._forget_if_unused(entry)
                continue
            if not self._make_room():
                return
            self._queue.popleft()
            entry.queued, entry.loading = False, True
            self.loads += 1
            try:
                job = self.executor.submit(self._load, entry)
            except RuntimeError:  # the executor is shut down: the engine is closing
                error = LoadCancelled(f"loading {entry.key} was cancelled (shutting down)")
                # Failed under the lock: waiters' callbacks only wake loops, never re-enter.
                _fail(self._settle_failed(entry, error), error)
                continue
            job.add_done_callback(partial(self._load_cancelled, entry=entry))

    def _make_room(self) -> bool:
        """Drop host copies, least recently used first, until one more fits (lock held)."""
        copies = [e for e in self._entries.values() if e.weights is not None or e.loading]
        excess = len(copies) + 1 - self.max_host_adapters
        for entry in sorted(copies, key=lambda e: e.last_used):
            if excess <= 0:
                break
            if entry.droppable:
                entry.weights = None
                excess -= 1
                self.events.adapter_evicted(entry.key.adapter, "host")
                log.debug("adapter %s left host memory", entry.key)
        return excess <= 0

    def _load(self, entry: _Entry) -> None:
        started = time.monotonic()
        try:
            weights = self.loader(entry.key)
            if weights.kind != entry.kind:
                raise InvalidAdapter(f"{entry.key} is a {weights.kind} adapter")
        except BaseException as e:  # noqa: BLE001 - handed to every waiter
            with self._lock:
                waiters = self._settle_failed(entry, e)
            _fail(waiters, e)
            return
        with self._lock:
            entry.weights, entry.loading, entry.nbytes = weights, False, weights.nbytes
            waiters, entry.waiters = entry.waiters, []
        self.events.adapter_loaded(entry.key.adapter, time.monotonic() - started)
        log.info("loaded adapter %s into host memory (%d bytes)", entry.key, weights.nbytes)
        for waiter in waiters:
            if waiter.set_running_or_notify_cancel():  # False: that caller stopped waiting
                waiter.set_result(entry)

    def _load_cancelled(self, job: Future, entry: _Entry) -> None:
        if job.cancelled():  # the executor shut down before the load ran
            error = LoadCancelled(f"loading {entry.key} was cancelled (shutting down)")
            with self._lock:
                waiters = self._settle_failed(entry, error)
            _fail(waiters, error)

    def _settle_failed(self, entry: _Entry, error: BaseException) -> list[Future]:
        """A load ended without weights: hand back its waiters, keep nothing (lock held)."""
        entry.loading = False
        waiters, entry.waiters = entry.waiters, []
        self._forget_if_unused(entry)
        self._start_loads()
        return waiters

    def _forget_if_unused(self, entry: _Entry) -> None:
        """Drop the record of a version that never loaded and nobody holds (lock held)."""
        idle = not (entry.loading or entry.queued or entry.refs)
        if idle and entry.nbytes is None and self._entries.get(entry.key) is entry:
            del self._entries[entry.key]

    def release(self, key: AdapterVersion) -> None:
        with self._lock:
            entry = self._entries[key]
            assert entry.refs > 0, key
            entry.refs -= 1
            entry.last_used = time.time()
            self._forget_if_unused(entry)  # its load failed: the next acquire retries
            self._start_loads()  # a copy may have become droppable

    def set_pinned(self, key: AdapterVersion, pinned: bool) -> None:
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
            self._start_loads()

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

    def slot_of(self, key: AdapterVersion) -> int | None:
        with self._lock:
            entry = self._entries.get(key)
            return entry.slot if entry else None

    def host_copies(self) -> int:
        """Adapter copies in host memory now, loads in progress included (<= max_host_adapters)."""
        with self._lock:
            return sum(e.weights is not None or e.loading for e in self._entries.values())

    # --- engine thread only ---

    def place(self, key: AdapterVersion) -> int | None:
        """The slot holding ``key`` (acquired, loaded), copying it into one if needed; None if
        every slot is held by an adapter in use or pinned (try again after a step)."""
        slot = self.reserve(key)
        self.copy_reserved()
        return slot

    def reserve(self, key: AdapterVersion) -> int | None:
        """Like ``place``, but only claims the slot (cheap: callers may hold their own locks);
        the weights are copied by the next ``copy_reserved``, which must run before the slot
        is used."""
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
            self._slots[slot], entry.slot, entry.copying = key, slot, True
            self._to_copy.append(entry)
            return slot

    def copy_reserved(self) -> None:
        """Copy the adapters ``reserve`` placed into their slots. Runs without the lock: the
        event loop takes it (acquire, release) and a large adapter takes a while to copy; only
        this thread touches slots, so nothing races the copy."""
        while self._to_copy:
            entry = self._to_copy.popleft()
            assert entry.slot is not None and entry.weights is not None
            try:
                self.lora.load(entry.slot, entry.weights)
            except BaseException:
                with self._lock:
                    self._slots[entry.slot], entry.slot, entry.copying = None, None, False
                raise
            with self._lock:
                entry.copying = False
                self._start_loads()  # its host copy may now go to make room
            log.debug("adapter %s -> slot %d", entry.key, entry.slot)

    def _free_slot(self) -> int | None:
        for slot in range(1, len(self._slots)):
            if self._slots[slot] is None:
                return slot
        victims = [
            self._entries[k]
            for k in self._slots[1:]
            if k is not None and self._entries[k].refs == 0 and not self._entries[k].pinned
            and not self._entries[k].copying
        ]
        if not victims:
            return None
        victim = min(victims, key=lambda e: e.last_used)
        return self._evict_slot(victim)  # ``load`` overwrites the whole slot: no clear needed

    def _evict_slot(self, entry: _Entry) -> int:
        assert entry.slot is not None and entry.refs == 0 and not entry.pinned
        slot, entry.slot = entry.slot, None
        self._slots[slot] = None
        self.events.adapter_evicted(entry.key.adapter, "slot")
        log.debug("adapter %s evicted from slot %d", entry.key, slot)
        return slot

    def drop(self, key: AdapterVersion) -> None:
        """Unload ``key`` from its slot and host memory (disk cache stays). Conflict if in use."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            if entry.refs:
                raise Conflict(f"{key} is in use by {entry.refs} request(s); unload it later")
            entry.pinned = False
            slot = self._evict_slot(entry) if entry.slot is not None else None
            entry.weights = None
            if not (entry.loading or entry.queued):
                del self._entries[key]
            self._start_loads()
        if slot is not None:
            self.lora.clear(slot)  # outside the lock; only this thread uses slots


def _fail(waiters: list[Future], error: BaseException) -> None:
    for waiter in waiters:
        if waiter.set_running_or_notify_cancel():  # False: that caller stopped waiting
            waiter.set_exception(error)


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
