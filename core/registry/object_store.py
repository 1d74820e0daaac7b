"""The storage a registry needs, as one small interface with a local and an S3 implementation.

Only three primitives carry the registry's safety under concurrent writers:
``create`` (write if absent), ``replace`` (write if the current ETag matches) and ``read``
(content plus ETag). Blobs are content-addressed, so their writes are idempotent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    etag: str


class ObjectStore(ABC):
    """Keys are '/'-separated relative paths built only from validated names."""

    #: Where the objects live, for error messages (a path or an s3:// URL with its endpoint).
    location: str

    @abstractmethod
    def read(self, key: str) -> StoredObject | None:
        """The object and its ETag, or None if absent."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` only if ``key`` is absent; False if it already exists."""

    @abstractmethod
    def replace(self, key: str, data: bytes, etag: str | None) -> None:
        """Write ``data`` only if the current ETag is ``etag`` (None: only if absent).
        Raises core.errors.Conflict when another writer got there first."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Names directly below ``prefix`` (a folder key ending in '/'), files and folders."""

    @abstractmethod
    def scan(self, prefix: str) -> dict[str, str]:
        """Every object under ``prefix`` (at any depth): key -> a tag that changes whenever the
        object does. One listing (paged on S3), no reads: what a catalog polls."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def upload(self, key: str, source: Path) -> None:
        """Store a file's bytes at ``key`` (content-addressed blobs: overwriting is harmless)."""

    @abstractmethod
    def download(self, key: str, dest: Path) -> None:
        """Copy the object at ``key`` to the file ``dest``; core.errors.NotFound if absent."""
