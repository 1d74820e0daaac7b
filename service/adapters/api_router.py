"""/v1/adapters: list, upload versions, move aliases, and load/unload/pin in the engine."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from core.adapters import AdapterKind
from core.names import parse_ref
from service.adapters.protocol import (
    AdapterList,
    AdapterPublic,
    AliasPublic,
    AliasUpdate,
    PinRequest,
    ResidencyPublic,
    VersionPublic,
)
from service.adapters.service import residency_public, version_public
from service.auth import AdminCaller, InferCaller
from service.openapi import errors
from service.state import ServiceState, get_state

router = APIRouter(prefix="/v1/adapters", tags=["adapters"])
StateDep = Annotated[ServiceState, Depends(get_state)]


@router.get("", response_model=AdapterList)
async def list_adapters(_: InferCaller, state: StateDep) -> AdapterList:
    """Every adapter with its versions, aliases and residency in the engine."""
    return AdapterList(data=await asyncio.to_thread(state.adapters.list))


@router.get("/{name}", response_model=AdapterPublic)
async def get_adapter(name: str, _: InferCaller, state: StateDep) -> AdapterPublic:
    """One adapter with its versions, aliases and residency."""
    return await asyncio.to_thread(state.adapters.describe, name)


@router.post("/{name}/versions", response_model=VersionPublic, status_code=201, responses=errors(409, 422))
async def publish_version(
    name: str,
    caller: AdminCaller,
    state: StateDep,
    files: Annotated[list[UploadFile], File(description="adapter_config.json + adapter_model.safetensors, or one .tar.gz/.zip")],
    kind: Annotated[AdapterKind, Form()] = "policy",
    alias: Annotated[list[str], Form(description="Aliases to point at the new version.")] = [],  # noqa: B006
) -> VersionPublic:
    """Publish an uploaded PEFT adapter as the next version of ``name``."""
    manifest = await asyncio.to_thread(state.adapters.publish, name, kind, files, alias, caller)
    if alias:
        await state.engine.refresh_aliases()
    return version_public(manifest)


@router.put("/{name}/aliases/{alias}", response_model=AliasPublic, responses=errors(409))
async def set_alias(name: str, alias: str, update: AliasUpdate, _: AdminCaller, state: StateDep) -> AliasPublic:
    """Point an alias at a version (compare-and-swap with ``expected``); the engine follows."""
    return await state.adapters.set_alias(name, alias, update)


@router.delete("/{name}/aliases/{alias}", response_model=AliasPublic, responses=errors(409))
async def delete_alias(name: str, alias: str, _: AdminCaller, state: StateDep) -> AliasPublic:
    """Remove an alias."""
    return await state.adapters.delete_alias(name, alias)


@router.post("/{ref}/load", response_model=ResidencyPublic, responses=errors(409, 422, 502))
async def load_adapter(ref: str, _: AdminCaller, state: StateDep) -> ResidencyPublic:
    """Load ``name@version|alias`` into host memory and a LoRA slot ahead of traffic."""
    return residency_public(await state.engine.load(parse_ref(ref, param="ref")))


@router.post("/{ref}/pin", response_model=ResidencyPublic, responses=errors(409, 422, 502))
async def pin_adapter(ref: str, body: PinRequest, _: AdminCaller, state: StateDep) -> ResidencyPublic:
    """Pin (never evict) or unpin an adapter version."""
    return residency_public(await state.engine.pin(parse_ref(ref, param="ref"), body.pinned))


@router.post("/{ref}/unload", status_code=204, responses=errors(409))
async def unload_adapter(ref: str, _: AdminCaller, state: StateDep) -> None:
    """Drop an adapter version from its slot and host memory (409 while requests use it)."""
    await state.engine.unload(parse_ref(ref, param="ref"))
