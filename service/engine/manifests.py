"""The engine's manifest cache: each adapter version's manifest, read from the registry once.

A version never changes, so its manifest is cached for the engine's lifetime; only aliases
move (``hotswap.py`` follows them). Thread-safe: callers on the I/O pool, the load pool and the
event loop share it.
"""

from __future__ import annotations

import threading

from core.names import AdapterVersion
from core.registry import Manifest, Registry


class ManifestCache:
    def __init__(self, registry: Registry):
        self.registry = registry
        self._lock = threading.Lock()
        self._manifests: dict[AdapterVersion, Manifest] = {}

    def get(self, key: AdapterVersion) -> Manifest:
        """The manifest of version ``key`` (blocking I/O on a first use; NotFound if unknown)."""
        with self._lock:
            known = self._manifests.get(key)
        if known is None:
            known = self.registry.resolve(key)
            with self._lock:
                self._manifests[key] = known
        return known

    def cached(self, key: AdapterVersion) -> Manifest | None:
        """What ``get(key)`` returns if it needs no I/O, else None (no I/O here)."""
        with self._lock:
            return self._manifests.get(key)

    def remember(self, manifest: Manifest) -> None:
        """Keep a manifest read by other means (an alias lookup), unless one is cached."""
        with self._lock:
            self._manifests.setdefault(manifest.adapter_version, manifest)
