"""Schemas of the adapter admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.adapters import AdapterKind, Tier


class VersionPublic(BaseModel):
    version: int
    kind: AdapterKind
    rank: int
    alpha: float
    target_modules: list[str]
    created_at: datetime
    created_by: str | None
    metrics: dict[str, Any]
    lineage: dict[str, Any]


class ResidencyPublic(BaseModel):
    """Where the engine holds a version: a LoRA slot, host memory, or only the disk cache."""

    version: int
    tier: Tier
    pinned: bool
    in_use: int
    last_used: datetime | None


class AdapterPublic(BaseModel):
    name: str
    kind: AdapterKind
    versions: list[VersionPublic]
    aliases: dict[str, int]
    residency: list[ResidencyPublic]


class AdapterList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdapterPublic]


class AliasUpdate(BaseModel):
    version: int = Field(ge=1, description="The version the alias should point to.")
    expected: int | None = Field(
        None,
        description="Compare-and-swap: the version the alias must point to now (omit to move "
        "it unconditionally; use expected_absent for a new alias).",
    )
    expected_absent: bool = Field(False, description="Only create the alias if it does not exist.")


class AliasPublic(BaseModel):
    adapter: str
    alias: str
    version: int | None


class PinRequest(BaseModel):
    pinned: bool = True
