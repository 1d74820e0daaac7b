"""Admin operations on adapter residency: load, pin, unload, refresh aliases, list.

Each operation resolves the reference like a request does, then works on ``AdapterManager``;
copies into or out of a LoRA slot run on the engine thread, between two steps.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass

from core.names import AdapterVersion, Reference
from service.engine.adapters import AdapterManager, AdapterStatus
from service.engine.engine_thread import EngineThread
from service.engine.hotswap import AliasMove
from service.engine.loading import AdapterLoading, adapter_reference


@dataclass(eq=False)
class AdapterAdmin:
    loading: AdapterLoading
    adapters: AdapterManager
    thread: EngineThread
    io: Executor  # alias refreshes wait for loads: never on the load pool

    async def load(self, ref: Reference | str) -> AdapterStatus:
        """Load ``ref`` into host memory and a slot if one is free or evictable."""
        manifest = await self.loading.resolve(adapter_reference(ref))
        key = await self.loading.acquire(manifest, manifest.kind)
        try:
            await asyncio.wrap_future(self.thread.call(lambda: self.adapters.place(key)))
        finally:
            self.adapters.release(key)
        return self.status(key)

    async def pin(self, ref: Reference | str, pinned: bool = True) -> AdapterStatus:
        """Pin (keep in a slot and in memory, never evicted) or unpin ``ref``."""
        manifest = await self.loading.resolve(adapter_reference(ref))
        key = await self.loading.acquire(manifest, manifest.kind)
        try:
            self.adapters.set_pinned(key, pinned)
            if pinned:
                await asyncio.wrap_future(self.thread.call(lambda: self.adapters.place(key)))
        finally:
            self.adapters.release(key)
        return self.status(key)

    async def unload(self, ref: Reference | str) -> None:
        """Drop ``ref`` from its slot and host memory. Conflict if requests are using it."""
        manifest = await self.loading.resolve(adapter_reference(ref))
        key = manifest.adapter_version
        await asyncio.wrap_future(self.thread.call(lambda: self.adapters.drop(key)))

    async def refresh_aliases(self) -> list[AliasMove]:
        """Re-read followed aliases now; returns the moves applied (new versions are loaded
        before requests are switched to them)."""
        follower = self.loading.follower
        return await asyncio.get_running_loop().run_in_executor(self.io, follower.refresh)

    def residency(self) -> list[AdapterStatus]:
        """Every adapter version the engine holds or has held: tier, pin, use, aliases."""
        aliases = self.loading.follower.aliases_of()
        statuses = self.adapters.status()
        for status in statuses:
            status.aliases = sorted(aliases.get(AdapterVersion(status.adapter, status.version), []))
        return statuses

    def status(self, key: AdapterVersion) -> AdapterStatus:
        return next(s for s in self.residency() if AdapterVersion(s.adapter, s.version) == key)
