"""The engine's manifest cache: a version's manifest is read from the registry once."""

from __future__ import annotations

import pytest

from core.errors import NotFound
from core.names import AdapterAlias, AdapterVersion
from service.engine.hotswap import AliasFollower
from service.engine.manifests import ManifestCache


@pytest.fixture
def reads(published) -> list:
    """The references the registry resolves from now on."""
    seen: list = []
    real_resolve = published.resolve

    def counting_resolve(ref):
        seen.append(ref)
        return real_resolve(ref)

    published.resolve = counting_resolve
    return seen


def test_a_versions_manifest_is_read_from_the_registry_once(published, reads):
    cache = ManifestCache(published)
    key = AdapterVersion("alpha", 1)
    assert cache.cached(key) is None  # no I/O to answer that
    first = cache.get(key)
    assert first.adapter_version == key
    assert cache.get(key) is first and cache.cached(key) is first
    assert reads == [key]


def test_an_alias_lookup_fills_the_cache_for_its_version(published, reads):
    cache = ManifestCache(published)
    follower = AliasFollower(published, cache, warm=lambda manifest: None)
    manifest = follower.resolve(AdapterAlias("alpha", "production"))
    assert cache.get(AdapterVersion("alpha", 1)) is manifest
    assert reads == [AdapterAlias("alpha", "production")]  # the version was not read again


def test_an_unknown_version_is_not_found_and_not_cached(published):
    cache = ManifestCache(published)
    key = AdapterVersion("alpha", 99)
    with pytest.raises(NotFound):
        cache.get(key)
    assert cache.cached(key) is None
