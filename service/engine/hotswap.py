"""Following registry aliases: ``summarize@production`` moves, the engine follows.

The follower maps each (adapter, alias) that requests have used to a version. ``refresh`` (on a
timer every ``alias_poll_seconds``, or called explicitly) reads the registry; when an alias has
moved it first loads the new version (``warm``), and only then switches the mapping, so:

- new requests get the new version as soon as it is ready, never a half-loaded one;
- requests in flight hold a reference on the version they started with and finish on it;
- a new version that fails to load is logged (once) and skipped; the alias keeps serving the
  old one, and the new version is tried again with exponential backoff (WARM_RETRY_FIRST
  doubling up to WARM_RETRY_MAX), not on every poll, so no request fails because of a swap.

Versions' manifests come from the engine's ``ManifestCache`` (``manifests.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.names import AdapterAlias, AdapterVersion
from core.polling import Poller
from core.registry import Manifest, Registry
from service.engine.events import EngineEvents, NoEvents
from service.engine.manifests import ManifestCache

log = logging.getLogger(__name__)

# A version an alias moved to that failed to load is tried again after these many seconds,
# doubling after each failure.
WARM_RETRY_FIRST = 30.0
WARM_RETRY_MAX = 900.0


@dataclass(frozen=True)
class _WarmFailure:
    retry_at: float  # clock() time
    delay: float  # seconds waited before this retry; doubles on the next failure


@dataclass(frozen=True)
class AliasMove:
    adapter: str
    alias: str
    old: int
    new: int | None  # None: the alias was deleted


class AliasFollower:
    def __init__(
        self,
        registry: Registry,
        manifests: ManifestCache,
        warm: Callable[[Manifest], None],
        events: EngineEvents | None = None,
    ):
        self.registry = registry
        self.manifests = manifests
        self.warm = warm  # blocking: loads a version so that serving it is instant
        self.events: EngineEvents = events or NoEvents()
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._aliases: dict[AdapterAlias, Manifest] = {}
        self._failures: dict[AdapterVersion, _WarmFailure] = {}  # versions that failed to warm
        self.clock: Callable[[], float] = time.monotonic
        self._poller = Poller("loraloop-aliases", self.refresh, "alias refresh failed")

    def resolve(self, ref: AdapterAlias) -> Manifest:
        """The manifest an alias serves now (blocking I/O on a first use; NotFound if
        unknown). Aliases seen here are followed from then on."""
        with self._lock:
            known = self._aliases.get(ref)
        if known is not None:
            return known
        manifest = self.registry.resolve(ref)
        self.manifests.remember(manifest)
        with self._lock:
            return self._aliases.setdefault(ref, manifest)

    def cached(self, ref: AdapterAlias) -> Manifest | None:
        """What ``resolve(ref)`` returns if it needs no I/O, else None (no I/O here)."""
        with self._lock:
            return self._aliases.get(ref)

    def aliases_of(self) -> dict[AdapterVersion, list[str]]:
        """Which followed aliases point at each version now."""
        result: dict[AdapterVersion, list[str]] = {}
        with self._lock:
            for followed, manifest in self._aliases.items():
                result.setdefault(manifest.adapter_version, []).append(followed.alias)
        return result

    def refresh(self) -> list[AliasMove]:
        """Re-read every followed alias; load then switch to versions that moved."""
        moves = []
        with self._refresh_lock:  # the timer and an explicit refresh never race each other
            with self._lock:
                followed = dict(self._aliases)
            for name in sorted({ref.adapter for ref in followed}):
                try:
                    current = self.registry.aliases(name)
                except Exception:
                    log.exception(
                        "cannot read the aliases of %s; keeping the current versions", name
                    )
                    continue
                for ref, manifest in followed.items():
                    adapter, alias = ref.adapter, ref.alias
                    if adapter != name:
                        continue
                    version = current.get(alias)
                    if version == manifest.version:
                        continue
                    if version is None:
                        with self._lock:
                            self._aliases.pop(ref, None)
                        moves.append(AliasMove(adapter, alias, manifest.version, None))
                        continue
                    key = AdapterVersion(adapter, version)
                    failure = self._failures.get(key)
                    if failure is not None and self.clock() < failure.retry_at:
                        continue  # backing off: not fetched again on every poll
                    try:
                        new = self.manifests.get(key)
                        self.warm(new)
                    except Exception:
                        delay = WARM_RETRY_FIRST if failure is None else failure.delay * 2
                        delay = min(delay, WARM_RETRY_MAX)
                        self._failures[key] = _WarmFailure(self.clock() + delay, delay)
                        if failure is None:  # logged once; retries log at debug level
                            log.exception(
                                "%s@%s moved to %s, which cannot be loaded; still serving %s; "
                                "retrying with backoff from %g s",
                                adapter,
                                alias,
                                version,
                                manifest.version,
                                delay,
                            )
                        else:
                            log.debug("%s still cannot be loaded; next try in %g s", key, delay)
                        continue
                    self._failures.pop(key, None)
                    with self._lock:
                        self._aliases[ref] = new
                    log.info(
                        "%s@%s: now serving version %s (was %s)",
                        adapter,
                        alias,
                        version,
                        manifest.version,
                    )
                    moves.append(AliasMove(adapter, alias, manifest.version, version))
                    self.events.alias_moved(adapter, alias)
        return moves

    def start(self, poll_seconds: float) -> None:
        """Refresh every ``poll_seconds`` on a background thread (0: never)."""
        self._poller.start(poll_seconds)

    def stop(self) -> None:
        self._poller.stop()
