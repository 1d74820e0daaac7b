"""Versioned adapter registry on a local folder or S3; see registry.py for the layout."""

from __future__ import annotations

from urllib.parse import urlparse

from core.adapters import AdapterKind
from core.base.info import BaseModelInfo
from core.registry.local_store import LocalObjectStore
from core.registry.manifest import AliasRecord, FileEntry, Manifest
from core.registry.object_store import ObjectStore
from core.registry.registry import ANY, Registry
from core.registry.s3_store import S3ObjectStore
from core.settings import Settings

__all__ = [
    "ANY",
    "AdapterKind",
    "AliasRecord",
    "FileEntry",
    "Manifest",
    "ObjectStore",
    "Registry",
    "object_store_from_url",
    "open_registry",
]


def object_store_from_url(url: str, settings: Settings) -> ObjectStore:
    """``s3://bucket/prefix`` -> S3; ``file:///path`` or a plain path -> local folder."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        return S3ObjectStore(url, settings)
    if parsed.scheme == "file":
        return LocalObjectStore(parsed.path)
    if parsed.scheme == "":
        return LocalObjectStore(url)
    raise ValueError(f"registry_url {url!r}: use s3://bucket/prefix, file:///path or a path")


def open_registry(settings: Settings, base: BaseModelInfo) -> Registry:
    """The registry of ``settings.registry_url``, checking adapters against ``base``."""
    assert settings.registry_url is not None and settings.cache_dir is not None
    return Registry(
        object_store_from_url(settings.registry_url, settings),
        base,
        cache_dir=settings.cache_dir,
        max_rank=settings.max_lora_rank,
        cache_max_bytes=settings.cache_max_bytes,
    )
