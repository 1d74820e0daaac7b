"""What the engine reports about adapters as it happens, for metrics.

The engine knows nothing of Prometheus: it calls an ``EngineEvents`` it was given (the
service's metrics implement it); ``NoEvents`` when nobody listens. Calls are cheap and may
come from any engine thread, sometimes under the adapter lock: implementations must not block.
"""

from __future__ import annotations

from typing import Protocol

from core.adapters import Tier


class EngineEvents(Protocol):
    def adapter_hit(self, adapter: str, tier: Tier) -> None:
        """A request found the adapter resident (tier "slot" or "host")."""

    def adapter_miss(self, adapter: str) -> None:
        """A request had to load the adapter (from the disk cache or the registry)."""

    def adapter_loaded(self, adapter: str, seconds: float) -> None:
        """An adapter's weights reached host memory after ``seconds`` of fetching and reading."""

    def adapter_evicted(self, adapter: str, tier: Tier) -> None:
        """An adapter left a slot or host memory to make room (tier "slot" or "host")."""

    def alias_moved(self, adapter: str, alias: str) -> None:
        """The engine switched ``adapter@alias`` to a new version (a hot-swap)."""


class NoEvents:
    def adapter_hit(self, adapter: str, tier: Tier) -> None:
        pass

    def adapter_miss(self, adapter: str) -> None:
        pass

    def adapter_loaded(self, adapter: str, seconds: float) -> None:
        pass

    def adapter_evicted(self, adapter: str, tier: Tier) -> None:
        pass

    def alias_moved(self, adapter: str, alias: str) -> None:
        pass
