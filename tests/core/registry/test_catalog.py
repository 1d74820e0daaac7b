"""The registry catalog: versions and aliases from one listing, changes picked up on refresh,
stray objects skipped."""

from __future__ import annotations

from core.registry import Registry
from core.registry.catalog import Catalog


def test_the_catalog_follows_versions_and_aliases_and_skips_strays(registry: Registry, new_adapter):
    registry.publish(new_adapter(seed=1), "summarize")
    registry.set_alias("summarize", "production", 1)
    registry.store.create("adapters/README.md", b"# not an adapter")
    registry.store.create("adapters/Upper/versions/1.json", b"{}")
    registry.store.create("adapters/summarize/versions/notes.json", b"{}")
    catalog = Catalog(registry)
    [entry] = catalog.adapters()
    assert (entry.name, [m.version for m in entry.versions], entry.aliases) == ("summarize", [1], {"production": 1})

    registry.publish(new_adapter(seed=2), "summarize")
    registry.set_alias("summarize", "production", 2)
    registry.set_alias("summarize", "candidate", 1)
    assert catalog.adapters()[0].aliases == {"production": 1}  # nothing read until a refresh
    catalog.refresh()
    [entry] = catalog.adapters()
    assert [m.version for m in entry.versions] == [1, 2]
    assert entry.aliases == {"candidate": 1, "production": 2}
    registry.set_alias("summarize", "candidate", None)  # a deleted alias is a tombstone
    catalog.refresh()
    assert catalog.adapters()[0].aliases == {"production": 2}
