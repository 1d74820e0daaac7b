"""The local adapter cache: bounded in bytes, least recently used first, never evicting a
version in use by a thread or another process, never trusting a file of the wrong size."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from core.hashing import sha256_file
from core.registry import Registry, open_registry
from core.settings import Settings
from tests.settings_variants import settings_env, updated


def limited(registry_settings: Settings, base_info, cache_max_bytes: int) -> Registry:
    """Another registry on the same storage and cache folder, with a byte limit."""
    return open_registry(updated(registry_settings, cache_max_bytes=cache_max_bytes), base_info)


def cached(registry: Registry) -> list[int]:
    folder = registry.cache_dir / "summarize"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


def assert_complete(registry: Registry, folder: Path, version: int) -> None:
    for name, entry in registry.manifest("summarize", version).files.items():
        assert sha256_file(folder / name) == entry.sha256


def test_the_cache_stays_within_its_byte_limit_evicting_the_least_recently_used(
    three_versions: Registry, registry_settings, base_info
):
    size = folder_bytes(three_versions.fetch("summarize", 1))  # the versions are the same size
    registry = limited(registry_settings, base_info, 2 * size + size // 2)
    registry.fetch("summarize", 2)
    registry.fetch("summarize", 1)  # a cache hit: 1 is now more recently used than 2
    registry.fetch("summarize", 3)
    assert cached(registry) == [1, 3]
    assert_complete(registry, registry.fetch("summarize", 1), 1)


def test_a_version_read_by_another_thread_is_never_evicted(
    three_versions: Registry, registry_settings, base_info
):
    registry = limited(registry_settings, base_info, 0)  # 0: keep only what is in use
    holding, done = threading.Event(), threading.Event()
    seen: list[Path] = []

    def reader() -> None:
        with registry.checkout("summarize", 1) as folder:
            seen.append(folder)
            holding.set()
            done.wait(30)
            assert_complete(registry, folder, 1)  # still whole after the others came and went

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert holding.wait(30)
        registry.fetch("summarize", 2)
        registry.fetch("summarize", 3)
        assert cached(registry) == [1, 3]  # 2 went when 3 came; 1 is in use
    finally:
        done.set()
        thread.join(30)
    registry.fetch("summarize", 2)  # nothing holds 1 (or 3) now
    assert cached(registry) == [2]


# Holds summarize@1 until a line arrives on stdin.
HOLDER = textwrap.dedent(
    """
    import sys
    from core.base.folders import base_model_info
    from core.registry import open_registry
    from core.settings import Settings

    settings = Settings()
    registry = open_registry(settings, base_model_info(settings))
    with registry.checkout("summarize", 1) as folder:
        print("holding", folder, flush=True)
        sys.stdin.readline()
    """
)


def test_a_version_read_by_another_process_is_never_evicted(settings, base_info, new_adapter):
    registry = limited(settings, base_info, 0)
    for seed in range(3):
        registry.publish(new_adapter(seed=seed), "summarize")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        env=settings_env(settings),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().startswith("holding")
        registry.fetch("summarize", 2)
        registry.fetch("summarize", 3)
        assert cached(registry) == [1, 3]
        assert_complete(registry, registry.cache_dir / "summarize" / "1", 1)
    finally:
        holder.communicate("done\n", timeout=60)
    assert holder.returncode == 0
    registry.fetch("summarize", 2)
    assert cached(registry) == [2]


def test_concurrent_fetch_read_and_evict_never_show_a_partial_folder(settings, base_info, new_adapter):
    registry = limited(settings, base_info, 0)
    for seed in range(3):
        registry.publish(new_adapter(seed=seed), "summarize")
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(12):
                version = rng.randint(1, 3)
                with registry.checkout("summarize", version) as folder:
                    assert_complete(registry, folder, version)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert not list(registry.cache_dir.glob(".trash-*"))


def test_a_cached_file_of_the_wrong_size_is_fetched_again(three_versions: Registry):
    folder = three_versions.fetch("summarize", 1)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated behind the marker's back
    assert three_versions.fetch("summarize", 1) == folder
    assert_complete(three_versions, folder, 1)
