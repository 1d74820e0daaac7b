"""An in-memory catalog of the registry: every adapter's versions and aliases, for listings.

Listing by reading every manifest and alias costs O(adapters x (versions + aliases)) requests
per call (hundreds on S3). The catalog instead polls: one listing of ``adapters/`` (with each
object's ETag), then reads only what is new or changed. Manifests are immutable, so each is
read once; an alias is re-read when its ETag changes. Listings then cost no I/O.

Objects that do not belong to the registry layout (a README, an uppercase name, a stray file)
are skipped with one warning each, never failing the listing for everyone.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field

from pydantic import ValidationError

from core.errors import IntegrityError, NotFound
from core.names import ALIAS_PATTERN, NAME_PATTERN
from core.polling import Poller
from core.registry.manifest import AliasRecord, Manifest
from core.registry.registry import Registry

log = logging.getLogger(__name__)

_VERSION_KEY = re.compile(rf"adapters/({NAME_PATTERN.pattern})/versions/([1-9][0-9]{{0,8}})\.json")
_ALIAS_KEY = re.compile(rf"adapters/({NAME_PATTERN.pattern})/aliases/({ALIAS_PATTERN.pattern})\.json")


@dataclass(frozen=True)
class CatalogEntry:
    """One adapter as the catalog last saw it."""

    name: str
    versions: list[Manifest]  # ascending
    aliases: dict[str, int] = field(default_factory=dict)


class Catalog:
    """Adapters, versions and aliases of ``registry``, refreshed by ``refresh`` (on a timer
    with ``start``, and after writes). Thread-safe; listings never touch the registry."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._refreshed = False
        self._manifests: dict[tuple[str, int], Manifest] = {}
        self._aliases: dict[str, tuple[str, int | None]] = {}  # alias key -> (tag, version)
        self._warned: set[str] = set()
        self._poller = Poller(
            "loraloop-catalog", self.refresh,
            "registry catalog refresh failed; listings keep the last view",
        )

    def adapters(self) -> list[CatalogEntry]:
        """Every adapter with at least one version, by name (refreshes once if never done)."""
        if not self._refreshed:
            self.refresh()
        with self._lock:
            manifests, aliases = dict(self._manifests), dict(self._aliases)
        versions: dict[str, list[Manifest]] = {}
        for (name, _), manifest in sorted(manifests.items()):
            versions.setdefault(name, []).append(manifest)
        entries = {name: CatalogEntry(name, found) for name, found in versions.items()}
        for key, (_, version) in sorted(aliases.items()):
            match = _ALIAS_KEY.fullmatch(key)
            assert match is not None  # only matching keys are stored
            if version is not None and match[1] in entries:
                entries[match[1]].aliases[match[2]] = version
        return [entries[name] for name in sorted(entries)]

    def refresh(self) -> None:
        """Read what changed in the registry since the last refresh."""
        with self._refresh_lock:
            tags = self.registry.store.scan("adapters/")
            with self._lock:
                known_manifests, known_aliases = dict(self._manifests), dict(self._aliases)
            manifests: dict[tuple[str, int], Manifest] = {}
            aliases: dict[str, tuple[str, int | None]] = {}
            for key, tag in sorted(tags.items()):
                if match := _VERSION_KEY.fullmatch(key):
                    ref = (match[1], int(match[2]))
                    manifest = known_manifests.get(ref) or self._read_manifest(key, *ref)
                    if manifest is not None:
                        manifests[ref] = manifest
                elif _ALIAS_KEY.fullmatch(key):
                    known = known_aliases.get(key)
                    aliases[key] = known if known and known[0] == tag else (tag, self._read_alias(key))
                else:
                    self._warn(key, "it is not part of the registry layout")
            with self._lock:
                self._manifests, self._aliases = manifests, aliases
                self._refreshed = True

    def _read_manifest(self, key: str, name: str, version: int) -> Manifest | None:
        try:
            return self.registry.manifest(name, version)
        except NotFound:  # deleted since the listing
            return None
        except IntegrityError as e:
            self._warn(key, str(e))
            return None

    def _read_alias(self, key: str) -> int | None:
        stored = self.registry.store.read(key)
        if stored is None:
            return None
        try:
            return AliasRecord.model_validate_json(stored.data).version
        except ValidationError as e:
            self._warn(key, f"it is not an alias record ({e.error_count()} errors)")
            return None

    def _warn(self, key: str, reason: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("registry catalog: skipping %s at %s: %s", key, self.registry.store.location, reason)

    # --- polling ---

    def start(self, poll_seconds: float) -> None:
        """Refresh every ``poll_seconds`` on a background thread (0: only on demand)."""
        self._poller.start(poll_seconds)

    def stop(self) -> None:
        self._poller.stop()
