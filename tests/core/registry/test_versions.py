"""Publishing: dense immutable version numbers, manifests, listing, resolving."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import NotFound
from core.hashing import sha256_file
from core.registry import Registry


def test_publish_records_what_the_adapter_is(registry: Registry, adapter_dir, base_info):
    manifest = registry.publish(
        adapter_dir, "summarize", metrics={"reward": 1.5}, lineage={"job": "j1"}, created_by="ci"
    )
    assert manifest.ref == "summarize@1"
    assert manifest.kind == "policy"
    assert (manifest.rank, manifest.alpha, manifest.target_modules) == (4, 8.0, ["q_proj", "v_proj"])
    assert manifest.base_fingerprint == base_info.fingerprint
    assert manifest.files["adapter_model.safetensors"].sha256 == sha256_file(
        adapter_dir / "adapter_model.safetensors"
    )
    assert registry.manifest("summarize", 1) == manifest
    assert registry.manifest("summarize", 1).metrics == {"reward": 1.5}


def test_reward_adapters_publish_as_kind_reward(registry: Registry, reward_dir):
    assert registry.publish(reward_dir, "helpful-rm", "reward").kind == "reward"


def test_versions_count_up_and_resolve_by_number_alias_and_bare_name(registry, new_adapter):
    first = registry.publish(new_adapter(seed=1), "summarize")
    second = registry.publish(new_adapter(seed=2), "summarize")
    assert (first.version, second.version) == (1, 2)
    assert registry.list_versions("summarize") == [1, 2]
    assert registry.list_adapters() == ["summarize"]
    registry.set_alias("summarize", "production", 1)
    assert registry.resolve("summarize@2") == second
    assert registry.resolve("summarize@production") == first
    assert registry.resolve("summarize") == first  # bare name = @production


def test_unknown_references_are_not_found(registry: Registry, adapter_dir):
    with pytest.raises(NotFound, match="'nope' does not exist"):
        registry.resolve("nope")
    registry.publish(adapter_dir, "summarize")
    with pytest.raises(NotFound, match="no alias 'staging'"):
        registry.resolve("summarize@staging")
    with pytest.raises(NotFound, match="summarize@7 does not exist"):
        registry.resolve("summarize@7")


def test_a_published_version_cannot_be_overwritten(registry: Registry, new_adapter):
    original = registry.publish(new_adapter(seed=1), "summarize")
    key = "adapters/summarize/versions/1.json"
    assert registry.store.create(key, b"{}") is False
    registry.publish(new_adapter(seed=2), "summarize")
    assert registry.manifest("summarize", 1) == original


def test_sixteen_concurrent_publishers_get_versions_1_to_16(registry: Registry, new_adapter):
    folders = [new_adapter(seed=i) for i in range(16)]
    start = threading.Barrier(16)

    def publish(folder):
        start.wait()
        return registry.publish(folder, "summarize")

    with ThreadPoolExecutor(16) as pool:
        manifests = list(pool.map(publish, folders))
    assert sorted(m.version for m in manifests) == list(range(1, 17))
    assert registry.list_versions("summarize") == list(range(1, 17))
    # each number names the folder its publisher uploaded, not another one's
    for folder, manifest in zip(folders, manifests):
        stored = registry.manifest("summarize", manifest.version)
        weights = sha256_file(folder / "adapter_model.safetensors")
        assert stored.files["adapter_model.safetensors"].sha256 == weights
