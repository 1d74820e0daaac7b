"""The version manifest: the immutable JSON record that makes a version exist.

Written last, with a create-if-absent write, after every blob it names is stored: a version is
visible exactly when its manifest is, so a publisher that dies mid-upload leaves no half version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.adapters import AdapterKind
from core.names import AdapterVersion

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
#: The only files a version holds. A manifest's ``files`` keys become local file names when a
#: version is fetched, so nothing else (``../x``, ``/etc/x``, ``a/b``) may ever be accepted.
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(BaseModel):
    """One registered version of an adapter."""

    model_config = ConfigDict(frozen=True)

    adapter: str
    version: int = Field(ge=1)
    kind: AdapterKind
    base_model_id: str
    base_fingerprint: str
    rank: int
    alpha: float
    target_modules: list[str]
    files: dict[str, FileEntry]
    metrics: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    created_by: str | None = None

    @field_validator("files")
    @classmethod
    def _only_adapter_files(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            if name not in ADAPTER_FILES:
                raise ValueError(
                    f"files names {name!r}; a version may only hold {', '.join(ADAPTER_FILES)}"
                )
        return files

    @property
    def adapter_version(self) -> AdapterVersion:
        """The version this manifest registers, ``adapter@version``."""
        return AdapterVersion(self.adapter, self.version)

    @property
    def ref(self) -> str:
        """``str(adapter_version)``: the ``name@N`` text, for logs and lineage JSON."""
        return str(self.adapter_version)


class AliasRecord(BaseModel):
    """An alias file's content. ``version`` None is a deleted alias (a tombstone keeps the
    compare-and-swap chain intact, so delete needs no conditional delete from the backend)."""

    version: int | None
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
