"""Adapters: list and describe them, publish a folder as a new version, move aliases
(compare-and-swap), and load, pin or unload versions in the server's engine."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from loraloop_client._models import Model, RequestModel

if TYPE_CHECKING:
    from loraloop_client._base import AsyncCore, SyncCore

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


class Version(Model):
    component = "VersionPublic"
    version: int
    kind: Literal["policy", "reward"]
    rank: int
    alpha: float
    target_modules: list[str]
    created_at: datetime
    created_by: str | None = None
    metrics: dict[str, Any] = {}
    lineage: dict[str, Any] = {}


class Residency(Model):
    """Where the engine holds a version: a LoRA ``slot``, ``host`` memory or the ``disk`` cache."""

    component = "ResidencyPublic"
    version: int
    tier: Literal["slot", "host", "disk"]
    pinned: bool
    in_use: int
    last_used: datetime | None = None


class Adapter(Model):
    component = "AdapterPublic"
    name: str
    kind: Literal["policy", "reward"]
    versions: list[Version]
    aliases: dict[str, int]
    residency: list[Residency] = []


class AdapterList(Model):
    component = "AdapterList"
    data: list[Adapter]


class Alias(Model):
    component = "AliasPublic"
    adapter: str
    alias: str
    version: int | None


class AliasUpdate(RequestModel):
    component = "AliasUpdate"
    version: int
    expected: int | None = None
    expected_absent: bool = False


class PinRequest(RequestModel):
    component = "PinRequest"
    pinned: bool = True


def _segment(value: str) -> str:
    return quote(value, safe="@")


def _upload_paths(path: str | Path) -> list[Path]:
    """The files to send for a PEFT adapter folder, or one .tar.gz/.zip archive."""
    path = Path(path)
    if path.is_dir():
        missing = [name for name in ADAPTER_FILES if not (path / name).is_file()]
        if missing:
            raise ValueError(f"{path} is not a PEFT adapter folder: {', '.join(missing)} missing")
        return [path / name for name in ADAPTER_FILES]
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        return [path]
    raise ValueError(f"{path}: give a PEFT adapter folder or a .tar.gz/.zip archive")


def _alias_body(version: int, expected: int | None, expected_absent: bool) -> dict[str, Any]:
    update = AliasUpdate(version=version, expected=expected, expected_absent=expected_absent)
    return update.model_dump(exclude_defaults=True) | {"version": version}


class Adapters:
    """``client.adapters``."""

    def __init__(self, core: SyncCore) -> None:
        self._core = core

    def list(self) -> list[Adapter]:
        """Every adapter with its versions, aliases and residency."""
        return AdapterList.model_validate(self._core.request("GET", "/v1/adapters").json()).data

    def get(self, name: str) -> Adapter:
        """One adapter; :class:`NotFoundError` if unknown."""
        return Adapter.model_validate(self._core.request("GET", f"/v1/adapters/{_segment(name)}").json())

    def publish(
        self, name: str, path: str | Path, *, kind: Literal["policy", "reward"] = "policy",
        aliases: list[str] | tuple[str, ...] = (),
    ) -> Version:
        """Upload a PEFT adapter folder (or archive) as the next version of ``name`` and point
        ``aliases`` at it. Not retried once sent (a retry could publish twice)."""
        with ExitStack() as stack:
            files = [("files", (p.name, stack.enter_context(p.open("rb")))) for p in _upload_paths(path)]
            response = self._core.request(
                "POST", f"/v1/adapters/{_segment(name)}/versions", files=files,
                data={"kind": kind, "alias": list(aliases)}, safe=False,
            )
        return Version.model_validate(response.json())

    def set_alias(
        self, name: str, alias: str, version: int, *, expected: int | None = None,
        expected_absent: bool = False,
    ) -> Alias:
        """Point ``alias`` at ``version``. With ``expected`` (the version it points to now) or
        ``expected_absent``, a compare-and-swap: :class:`ConflictError` if someone moved it first."""
        body = _alias_body(version, expected, expected_absent)
        path = f"/v1/adapters/{_segment(name)}/aliases/{_segment(alias)}"
        return Alias.model_validate(self._core.request("PUT", path, json=body).json())

    def delete_alias(self, name: str, alias: str) -> Alias:
        path = f"/v1/adapters/{_segment(name)}/aliases/{_segment(alias)}"
        return Alias.model_validate(self._core.request("DELETE", path).json())

    def load(self, ref: str) -> Residency:
        """Bring ``name``, ``name@alias`` or ``name@N`` into a LoRA slot ahead of traffic."""
        return Residency.model_validate(self._core.request("POST", f"/v1/adapters/{_segment(ref)}/load").json())

    def pin(self, ref: str, pinned: bool = True) -> Residency:
        """Keep a version loaded (never evicted), or with ``pinned=False`` release it."""
        body = PinRequest(pinned=pinned).model_dump()
        path = f"/v1/adapters/{_segment(ref)}/pin"
        return Residency.model_validate(self._core.request("POST", path, json=body).json())

    def unload(self, ref: str) -> None:
        """Drop a version from its slot and host memory; :class:`ConflictError` while in use."""
        self._core.request("POST", f"/v1/adapters/{_segment(ref)}/unload")


class AsyncAdapters:
    """``async_client.adapters``: the same calls as :class:`Adapters`, awaited."""

    def __init__(self, core: AsyncCore) -> None:
        self._core = core

    async def list(self) -> list[Adapter]:
        return AdapterList.model_validate((await self._core.request("GET", "/v1/adapters")).json()).data

    async def get(self, name: str) -> Adapter:
        return Adapter.model_validate((await self._core.request("GET", f"/v1/adapters/{_segment(name)}")).json())

    async def publish(
        self, name: str, path: str | Path, *, kind: Literal["policy", "reward"] = "policy",
        aliases: list[str] | tuple[str, ...] = (),
    ) -> Version:
        with ExitStack() as stack:
            files = [("files", (p.name, stack.enter_context(p.open("rb")))) for p in _upload_paths(path)]
            response = await self._core.request(
                "POST", f"/v1/adapters/{_segment(name)}/versions", files=files,
                data={"kind": kind, "alias": list(aliases)}, safe=False,
            )
        return Version.model_validate(response.json())

    async def set_alias(
        self, name: str, alias: str, version: int, *, expected: int | None = None,
        expected_absent: bool = False,
    ) -> Alias:
        body = _alias_body(version, expected, expected_absent)
        path = f"/v1/adapters/{_segment(name)}/aliases/{_segment(alias)}"
        return Alias.model_validate((await self._core.request("PUT", path, json=body)).json())

    async def delete_alias(self, name: str, alias: str) -> Alias:
        path = f"/v1/adapters/{_segment(name)}/aliases/{_segment(alias)}"
        return Alias.model_validate((await self._core.request("DELETE", path)).json())

    async def load(self, ref: str) -> Residency:
        response = await self._core.request("POST", f"/v1/adapters/{_segment(ref)}/load")
        return Residency.model_validate(response.json())

    async def pin(self, ref: str, pinned: bool = True) -> Residency:
        body = PinRequest(pinned=pinned).model_dump()
        response = await self._core.request("POST", f"/v1/adapters/{_segment(ref)}/pin", json=body)
        return Residency.model_validate(response.json())

    async def unload(self, ref: str) -> None:
        await self._core.request("POST", f"/v1/adapters/{_segment(ref)}/unload")
