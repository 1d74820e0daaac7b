"""From what a caller named to a loaded adapter version: resolve, check, acquire (and warm).

    reference ──resolve──► Manifest ──check──► AdapterVersion ──acquire──► loaded, referenced
    (name@alias, name@N)   (memory, or the     (kind, base,                (AdapterManager: host
                            I/O pool)           rank)                       memory; load pool)

``AdapterManager`` (``adapters.py``) keeps the loaded versions; this module decides which
version a reference means and gets it loaded. ``WeightLoader`` is the load itself (fetch from
the disk cache or the registry, sha256-checked, then read). ``warm`` loads a version an alias
moved to before the alias follower switches requests to it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

import torch

from core.adapters import AdapterKind
from core.base.info import BaseModelInfo
from core.errors import InvalidRequest
from core.names import AdapterVersion, Reference, parse_ref
from core.registry import Manifest, Registry
from core.settings import Settings
from service.engine.adapters import AdapterManager, check_manifest
from service.engine.engine_thread import EngineThread
from service.engine.events import EngineEvents
from service.engine.hotswap import AliasFollower
from service.engine.manifests import ManifestCache
from service.engine.weights import AdapterWeights, read_adapter


def adapter_reference(ref: Reference | str) -> Reference:
    """An adapter reference; text (``name``, ``name@alias``, ``name@N``) is parsed."""
    return parse_ref(ref, param="model") if isinstance(ref, str) else ref


class WeightLoader:
    """Loads one version's weights into host memory (on the load pool)."""

    def __init__(
        self,
        registry: Registry,
        manifests: ManifestCache,
        base_info: BaseModelInfo,
        settings: Settings,
        dtype: torch.dtype,
        device: torch.device,
    ):
        self.registry, self.manifests, self.base_info = registry, manifests, base_info
        self.max_rank = settings.max_lora_rank
        self.modules = frozenset(settings.lora_target_modules)
        self.dtype, self.device = dtype, device

    def read(self, key: AdapterVersion) -> AdapterWeights:
        """Fetch (disk cache, else registry; sha256-checked) and read one version. Only reached
        through ``AdapterLoading.acquire`` or ``warm``, which have checked the manifest."""
        manifest = self.manifests.get(key)
        # Not evicted meanwhile; with the manifest given, a version in the disk cache loads
        # while the registry is unreachable.
        with self.registry.checkout(key.adapter, key.version, manifest) as folder:
            weights = read_adapter(
                folder,
                self.base_info,
                kind=manifest.kind,
                max_rank=self.max_rank,
                modules=self.modules,
                dtype=self.dtype,
                name=str(key),
            )
        if self.device.type == "cuda":  # page-locked host copies make slot copies async
            for pair in weights.pairs.values():
                pair.A, pair.B = pair.A.pin_memory(), pair.B.pin_memory()
        return weights


class AdapterLoading:
    """Resolves references and takes loaded references on their versions. It owns the alias
    follower, whose moves it warms; thread-safe."""

    def __init__(
        self,
        registry: Registry,
        manifests: ManifestCache,
        adapters: AdapterManager,
        thread: EngineThread,
        io: Executor,
        base_info: BaseModelInfo,
        max_rank: int,
        events: EngineEvents | None = None,
    ):
        self.manifests = manifests
        self.adapters = adapters
        self.thread = thread
        self.io = io  # lookups: never the load pool, so waiting on a load cannot starve it
        self.base_info = base_info
        self.max_rank = max_rank
        self.follower = AliasFollower(registry, manifests, self.warm, events)

    async def resolve(self, ref: Reference) -> Manifest:
        """The manifest ``ref`` serves now: from memory, or looked up on the I/O pool."""
        known = self._cached(ref)
        if known is not None:
            return known
        return await asyncio.get_running_loop().run_in_executor(self.io, self._lookup, ref)

    def _cached(self, ref: Reference) -> Manifest | None:
        if isinstance(ref, AdapterVersion):
            return self.manifests.cached(ref)
        return self.follower.cached(ref)

    def _lookup(self, ref: Reference) -> Manifest:
        """Blocking I/O on a first use; NotFound if unknown. Aliases are followed from then on."""
        if isinstance(ref, AdapterVersion):
            return self.manifests.get(ref)
        return self.follower.resolve(ref)

    def check(self, manifest: Manifest, kind: AdapterKind, param: str = "model") -> AdapterVersion:
        """The key of ``manifest``'s version if this engine can serve it as ``kind``."""
        if manifest.kind != kind:
            raise InvalidRequest(
                f"{manifest.ref} is a {manifest.kind} adapter; this call needs a {kind} adapter",
                param=param,
            )
        check_manifest(manifest, self.base_info, self.max_rank)
        return manifest.adapter_version

    async def acquire(self, manifest: Manifest, kind: AdapterKind) -> AdapterVersion:
        """A reference on ``manifest``'s version, loaded; the caller releases it. Cancelling
        the caller cancels its wait only, never the load others may share."""
        key = self.check(manifest, kind)
        future = self.adapters.acquire(key, kind)
        try:
            await asyncio.wrap_future(future)
        except BaseException:
            self.adapters.release(key)
            raise
        return key

    def warm(self, manifest: Manifest) -> None:
        """Load a version an alias moved to, before requests are switched to it (blocking)."""
        key = self.check(manifest, manifest.kind)
        try:
            self.adapters.acquire(key, manifest.kind).result()  # raises if it cannot be loaded
        except BaseException:
            self.adapters.release(key)  # a failed load keeps nothing: the next try loads again
            raise

        def place_then_release() -> None:  # best effort: also copy it into a slot now
            try:
                self.adapters.place(key)
            finally:
                self.adapters.release(key)

        self.thread.call(place_then_release)
