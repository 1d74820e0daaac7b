"""The adapter admin API's logic: registry listings joined with the engine's residency,
uploads, alias moves (followed by the engine at once), load/unload/pin.

Listings come from a catalog of the registry (built at start-up, polled every
``alias_poll_seconds``, shared with the models feature) that this service refreshes after
every write through this server, so they cost no registry request."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from core.adapters import AdapterKind
from core.errors import NotFound
from core.names import parse_ref, validate_alias, validate_name
from core.registry import ANY, Manifest, Registry
from core.registry.catalog import Catalog, CatalogEntry
from core.settings import Settings
from service.adapters.protocol import (
    AdapterPublic,
    AliasPublic,
    AliasUpdate,
    ResidencyPublic,
    VersionPublic,
)
from service.adapters.uploads import Upload, write_upload
from service.engine import AdapterStatus, Engine


def version_public(m: Manifest) -> VersionPublic:
    return VersionPublic(
        version=m.version, kind=m.kind, rank=m.rank, alpha=m.alpha,
        target_modules=m.target_modules, created_at=m.created_at, created_by=m.created_by,
        metrics=m.metrics, lineage=m.lineage,
    )


def residency_public(s: AdapterStatus) -> ResidencyPublic:
    last_used = datetime.fromtimestamp(s.last_used, UTC) if s.last_used else None
    return ResidencyPublic(version=s.version, tier=s.tier, pinned=s.pinned, in_use=s.in_use, last_used=last_used)


class AdapterService:
    def __init__(self, settings: Settings, registry: Registry, engine: Engine, catalog: Catalog):
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.catalog = catalog

    # --- reads (blocking: run them in a thread) ---

    def describe(self, name: str) -> AdapterPublic:
        versions = [self.registry.manifest(name, v) for v in self.registry.list_versions(validate_name(name))]
        if not versions:
            raise NotFound(f"adapter {name!r} does not exist")
        return self._public(CatalogEntry(name, versions, self.registry.aliases(name)))

    def _public(self, entry: CatalogEntry) -> AdapterPublic:
        residency = [residency_public(s) for s in self.engine.residency() if s.adapter == entry.name]
        return AdapterPublic(
            name=entry.name,
            kind=entry.versions[-1].kind,
            versions=[version_public(m) for m in entry.versions],
            aliases=entry.aliases,
            residency=residency,
        )

    def list(self) -> list[AdapterPublic]:
        """Every adapter, from the catalog (no registry request once it is filled)."""
        return [self._public(entry) for entry in self.catalog.adapters()]

    # --- writes ---

    async def publish(
        self, name: str, kind: AdapterKind, uploads: Sequence[Upload], aliases: Sequence[str], created_by: str
    ) -> VersionPublic:
        """Publish the uploaded files as the next version of ``name`` and point ``aliases`` at
        it; the engine follows the aliases at once."""
        manifest = await asyncio.to_thread(self._publish, name, kind, uploads, aliases, created_by)
        if aliases:
            await self.engine.refresh_aliases()  # hot-swap now rather than at the next poll
        return version_public(manifest)

    def _publish(
        self, name: str, kind: AdapterKind, uploads: Sequence[Upload], aliases: Sequence[str], created_by: str
    ) -> Manifest:
        validate_name(name)
        for alias in aliases:
            validate_alias(alias)
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=self._upload_dir()))
        try:
            write_upload(uploads, folder, self.settings.max_upload_bytes)
            manifest = self.registry.publish(folder, name, kind, created_by=created_by)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        for alias in aliases:
            self.registry.set_alias(name, alias, manifest.version)
        self.catalog.refresh()  # listings show our own writes at once
        return manifest

    def _upload_dir(self) -> Path:
        path = self.settings.data_dir / "uploads"
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def set_alias(self, name: str, alias: str, update: AliasUpdate) -> AliasPublic:
        expected = None if update.expected_absent else ANY if update.expected is None else update.expected
        await asyncio.to_thread(self.registry.set_alias, name, alias, update.version, expected)
        await asyncio.to_thread(self.catalog.refresh)
        await self.engine.refresh_aliases()  # hot-swap now rather than at the next poll
        return AliasPublic(adapter=name, alias=alias, version=update.version)

    async def delete_alias(self, name: str, alias: str) -> AliasPublic:
        await asyncio.to_thread(self.registry.set_alias, name, alias, None)
        await asyncio.to_thread(self.catalog.refresh)
        await self.engine.refresh_aliases()
        return AliasPublic(adapter=name, alias=alias, version=None)

    # --- residency in the engine ---

    async def load(self, ref: str) -> ResidencyPublic:
        return residency_public(await self.engine.load(parse_ref(ref, param="ref")))

    async def pin(self, ref: str, pinned: bool) -> ResidencyPublic:
        return residency_public(await self.engine.pin(parse_ref(ref, param="ref"), pinned))

    async def unload(self, ref: str) -> None:
        await self.engine.unload(parse_ref(ref, param="ref"))
