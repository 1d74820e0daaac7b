"""Fetching: verified against the manifest's sha256, cached per (adapter, version)."""

from __future__ import annotations

import json
import re

import pytest
from safetensors.torch import load_file

from core.errors import IntegrityError
from core.registry import Registry
from core.registry.local_store import LocalObjectStore


def test_fetch_returns_the_published_files(registry: Registry, adapter_dir, registry_settings):
    registry.publish(adapter_dir, "summarize")
    folder = registry.fetch("summarize", 1)
    assert folder == registry_settings.cache_dir / "summarize" / "1"
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (folder / name).read_bytes() == (adapter_dir / name).read_bytes()
    assert load_file(folder / "adapter_model.safetensors").keys()
    assert registry.fetch("summarize", 1) == folder  # a cache hit


def test_a_tampered_blob_fails_the_fetch(registry: Registry, adapter_dir):
    manifest = registry.publish(adapter_dir, "summarize")
    key = f"blobs/sha256/{manifest.files['adapter_model.safetensors'].sha256}"
    tampered = bytearray(registry.store.read(key).data)
    tampered[-1] ^= 0xFF
    registry.store.replace(key, bytes(tampered), registry.store.read(key).etag)
    with pytest.raises(IntegrityError, match="sha256"):
        registry.fetch("summarize", 1)
    assert not (registry.cache_dir / "summarize" / "1").exists()


def test_a_cache_filled_from_other_bytes_is_not_reused(registry: Registry, new_adapter, base_info, tmp_path):
    from core.registry import Registry as R
    from core.registry.local_store import LocalObjectStore

    # Another registry shares the cache folder and has its own summarize@1.
    other = R(LocalObjectStore(tmp_path / "other-registry"), base_info, registry.cache_dir, 64)
    other.publish(new_adapter(seed=1), "summarize")
    other.fetch("summarize", 1)
    mine = registry.publish(new_adapter(seed=2), "summarize")
    folder = registry.fetch("summarize", 1)
    from core.hashing import sha256_file

    assert sha256_file(folder / "adapter_model.safetensors") == mine.files["adapter_model.safetensors"].sha256


@pytest.mark.parametrize("evil", ["../../escaped.safetensors", "ABSOLUTE", "sub/adapter_config.json"])
def test_a_manifest_naming_a_foreign_file_is_corrupt_and_nothing_is_written(
    registry: Registry, adapter_dir, tmp_path, evil
):
    manifest = registry.publish(adapter_dir, "summarize")
    if evil == "ABSOLUTE":
        evil = str(tmp_path / "escaped-absolute")
    # Version 2's manifest names a real blob under a path that would leave the cache folder.
    forged = manifest.model_dump(mode="json") | {"version": 2}
    forged["files"] = {**forged["files"], evil: forged["files"]["adapter_model.safetensors"]}
    registry.store.create("adapters/summarize/versions/2.json", json.dumps(forged).encode())
    with pytest.raises(IntegrityError, match=re.escape(repr(evil))):
        registry.fetch("summarize", 2)
    with pytest.raises(IntegrityError, match="corrupt"):
        registry.resolve("summarize@2")
    escaped = [p for p in tmp_path.rglob("escaped*")] + [p for p in registry.cache_dir.rglob("sub")]
    assert escaped == []
    assert not (registry.cache_dir / "summarize" / "2").exists()


def test_the_local_store_refuses_a_key_outside_its_root(tmp_path):
    store = LocalObjectStore(tmp_path / "registry")
    (tmp_path / "secret").write_text("x")
    for key in ("../secret", str(tmp_path / "secret")):
        with pytest.raises(IntegrityError, match="outside the registry"):
            store.read(key)
        with pytest.raises(IntegrityError, match="outside the registry"):
            store.create(key, b"overwritten")
    assert (tmp_path / "secret").read_text() == "x"
