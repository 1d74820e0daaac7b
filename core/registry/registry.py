"""The artifact registry: immutable, numbered adapter versions and movable aliases.

Layout under the registry root (same on disk and in S3)::

    blobs/sha256/<hex>                     file contents, written once
    adapters/<name>/versions/<N>.json      manifest: makes version N exist
    adapters/<name>/aliases/<alias>.json   {"version": N}, moved by compare-and-swap

Publishing uploads the blobs, then creates manifest N = (highest existing) + 1 with a
create-if-absent write; a publisher that loses the race retries with the next number. So versions
are dense (1, 2, 3 ...), never overwritten, and a crash before the manifest leaves only
unreferenced blobs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from core.adapters import AdapterKind
from core.base.info import BaseModelInfo
from core.errors import Conflict, IntegrityError, InvalidAdapter, NotFound
from core.hashing import sha256_file
from core.names import AdapterVersion, Reference, parse_ref, validate_alias, validate_name
from core.registry.cache import AdapterCache
from core.registry.manifest import AliasRecord, FileEntry, Manifest
from core.registry.object_store import ObjectStore
from core.registry.validation import ADAPTER_FILES, validate_adapter_folder

log = logging.getLogger(__name__)

_PUBLISH_ATTEMPTS = 1000  # far above any realistic number of concurrent writers


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: ``set_alias(..., expected=ANY)``: move the alias whatever it points to now.
ANY: Final = _Any()


def _blob_key(sha256: str) -> str:
    return f"blobs/sha256/{sha256}"


def _versions_prefix(adapter: str) -> str:
    return f"adapters/{adapter}/versions/"


def _alias_key(adapter: str, alias: str) -> str:
    return f"adapters/{adapter}/aliases/{alias}.json"


class Registry:
    """Adapter versions and aliases on an ObjectStore, with a verified local cache of at most
    ``cache_max_bytes`` (None: unbounded; versions in use may exceed it)."""

    def __init__(
        self,
        store: ObjectStore,
        base: BaseModelInfo,
        cache_dir: Path,
        max_rank: int,
        cache_max_bytes: int | None = None,
    ):
        self.store = store
        self.base = base
        self.cache_dir = Path(cache_dir)
        self.cache = AdapterCache(self.cache_dir, cache_max_bytes)
        self.max_rank = max_rank

    # --- versions ---

    def publish(
        self,
        folder: Path,
        adapter: str,
        kind: AdapterKind = "policy",
        *,
        metrics: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
        created_by: str | None = None,
    ) -> Manifest:
        """Validate a PEFT folder against the base, upload it and register the next version."""
        validate_name(adapter)
        folder = Path(folder)
        summary = validate_adapter_folder(folder, kind, self.base, self.max_rank)
        files: dict[str, FileEntry] = {}
        for name in ADAPTER_FILES:
            path = folder / name
            entry = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
            self.store.upload(_blob_key(entry.sha256), path)
            files[name] = entry
        for _ in range(_PUBLISH_ATTEMPTS):
            manifest = Manifest(
                adapter=adapter,
                version=self._latest_version(adapter) + 1,
                kind=kind,
                base_model_id=self.base.model_id,
                base_fingerprint=self.base.fingerprint,
                rank=summary.rank,
                alpha=summary.alpha,
                target_modules=summary.target_modules,
                files=files,
                metrics=metrics or {},
                lineage=lineage or {},
                created_by=created_by,
            )
            key = f"{_versions_prefix(adapter)}{manifest.version}.json"
            data = manifest.model_dump_json(indent=2).encode()
            if self.store.create(key, data) or self._landed(key, data):
                log.info("published %s (%s)", manifest.ref, kind)
                return manifest
        raise Conflict(f"could not publish {adapter}: too many concurrent publishers")

    def _landed(self, key: str, data: bytes) -> bool:
        """Whether ``key`` holds exactly ``data``: a conditional write whose response was lost
        and whose retry then failed its precondition did land (the bytes hold a timestamp, so
        no other writer's record is byte-identical)."""
        stored = self.store.read(key)
        return stored is not None and stored.data == data

    def list_adapters(self) -> list[str]:
        return self.store.list("adapters/")

    def list_versions(self, adapter: str) -> list[int]:
        validate_name(adapter)
        names = self.store.list(_versions_prefix(adapter))
        return sorted(int(n.removesuffix(".json")) for n in names if n.removesuffix(".json").isdigit())

    def _latest_version(self, adapter: str) -> int:
        versions = self.list_versions(adapter)
        return versions[-1] if versions else 0

    def manifest(self, adapter: str, version: int) -> Manifest:
        validate_name(adapter)
        stored = self.store.read(f"{_versions_prefix(adapter)}{version}.json")
        if stored is None:
            raise NotFound(f"adapter version {adapter}@{version} does not exist")
        try:
            return Manifest.model_validate_json(stored.data)
        except ValidationError as e:
            raise IntegrityError(f"manifest of {adapter}@{version} is corrupt: {e}") from None

    # --- aliases ---

    def _read_alias(self, adapter: str, alias: str) -> tuple[int | None, str | None]:
        stored = self.store.read(_alias_key(adapter, alias))
        if stored is None:
            return None, None
        return AliasRecord.model_validate_json(stored.data).version, stored.etag

    def aliases(self, adapter: str) -> dict[str, int]:
        validate_name(adapter)
        result = {}
        for name in self.store.list(f"adapters/{adapter}/aliases/"):
            alias = name.removesuffix(".json")
            version, _ = self._read_alias(adapter, alias)
            if version is not None:
                result[alias] = version
        return result

    def set_alias(
        self, adapter: str, alias: str, version: int | None, expected: int | None | _Any = ANY
    ) -> None:
        """Point ``adapter@alias`` at ``version`` (None deletes it), compare-and-swap.

        With ``expected`` set (a version, or None for "alias absent"), raises Conflict unless
        the alias still points there when the write lands: of two movers starting from the same
        state, exactly one wins. With ``ANY`` the move applies to whatever is current: losing
        the ETag race to another writer only means reading the new ETag and trying again.
        """
        validate_name(adapter)
        validate_alias(alias)
        if version is not None:
            self.manifest(adapter, version)  # NotFound for a version that does not exist
        record = AliasRecord(version=version).model_dump_json().encode()
        key = _alias_key(adapter, alias)
        for _ in range(_PUBLISH_ATTEMPTS):
            current, etag = self._read_alias(adapter, alias)
            if not isinstance(expected, _Any) and current != expected:
                raise Conflict(
                    f"{adapter}@{alias} points to {current}, not {expected}: it was moved meanwhile"
                )
            try:
                self.store.replace(key, record, etag)
            except Conflict:
                if not self._landed(key, record):
                    continue  # another writer moved it first: re-read (and re-check expected)
            log.info("moved %s@%s: %s -> %s", adapter, alias, current, version)
            return
        raise Conflict(f"could not move {adapter}@{alias}: too many concurrent writers")

    def resolve(self, ref: str | Reference) -> Manifest:
        """The manifest a reference points to; NotFound if none. A text reference (``name``,
        ``name@alias``, ``name@N``, from a CLI or a config file) is parsed here."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        if isinstance(parsed, AdapterVersion):
            return self.manifest(parsed.adapter, parsed.version)
        version, _ = self._read_alias(parsed.adapter, parsed.alias)
        if version is None:
            if not self.list_versions(parsed.adapter):
                raise NotFound(f"adapter {parsed.adapter!r} does not exist")
            raise NotFound(f"adapter {parsed.adapter!r} has no alias {parsed.alias!r}")
        return self.manifest(parsed.adapter, version)

    # --- local cache ---

    def fetch(self, adapter: str, version: int, manifest: Manifest | None = None) -> Path:
        """A local folder with the version's files, sha256-verified on download.

        Cached under cache_dir/<adapter>/<version>; filled in a temporary folder and renamed,
        so readers never see a partial copy and concurrent fetchers agree. The folder may be
        evicted once nothing holds it: read it inside ``checkout`` instead. A caller that
        already holds the version's ``manifest`` (versions are immutable) passes it: a cached
        version is then read without reaching the registry, which may be down.
        """
        if manifest is None:
            manifest = self.manifest(adapter, version)
        assert (manifest.adapter, manifest.version) == (adapter, version), manifest.ref
        if manifest.base_fingerprint != self.base.fingerprint:
            raise InvalidAdapter(
                f"{manifest.ref} was made for base {manifest.base_model_id!r}, "
                f"not the served base {self.base.model_id!r}"
            )
        # The marker holds the manifest's file hashes: a cache filled from another registry
        # with the same (adapter, version) but other bytes is never mistaken for this one.
        marker = manifest.model_dump_json(include={"files"})
        return self.cache.ensure(adapter, version, marker, lambda tmp: self._download(manifest, tmp))

    @contextlib.contextmanager
    def checkout(
        self, adapter: str, version: int, manifest: Manifest | None = None
    ) -> Iterator[Path]:
        """``with registry.checkout(name, N) as folder:`` the fetched folder, which no thread
        or process evicts from the cache until the block ends (``manifest``: see ``fetch``)."""
        while True:
            folder = self.fetch(adapter, version, manifest)
            with self.cache.hold(adapter, version) as present:
                if present:  # else evicted between fetch and hold: fetch again
                    yield folder
                    return

    def _download(self, manifest: Manifest, folder: Path) -> None:
        for name, entry in manifest.files.items():  # names are ADAPTER_FILES: see Manifest
            path = folder / name
            self.store.download(_blob_key(entry.sha256), path)
            actual = sha256_file(path)
            if actual != entry.sha256 or path.stat().st_size != entry.size:
                raise IntegrityError(
                    f"{manifest.ref} file {name}: stored bytes have sha256 {actual}, "
                    f"the manifest says {entry.sha256}; the registry copy is corrupt"
                )
