"""/v1/adapters: list, upload versions, move aliases, and load/unload/pin in the engine."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from core.adapters import AdapterKind
from service.adapters.protocol import (
    AdapterList,
    AdapterPublic,
    AliasPublic,
    AliasUpdate,
    PinRequest,
    ResidencyPublic,
    VersionPublic,
)
from service.adapters.service import AdapterService
from service.auth import AdminCaller, InferCaller
from service.openapi import errors

router = APIRouter(prefix="/v1/adapters", tags=["adapters"])


async def get_adapters(request: Request) -> AdapterService:
    return request.app.state.services.adapters


AdaptersDep = Annotated[AdapterService, Depends(get_adapters)]


@router.get("", response_model=AdapterList)
async def list_adapters(_: InferCaller, adapters: AdaptersDep) -> AdapterList:
    """Every adapter with its versions, aliases and residency in the engine."""
    return AdapterList(data=await asyncio.to_thread(adapters.list))


@router.get("/{name}", response_model=AdapterPublic)
async def get_adapter(name: str, _: InferCaller, adapters: AdaptersDep) -> AdapterPublic:
    """One adapter with its versions, aliases and residency."""
    return await asyncio.to_thread(adapters.describe, name)


@router.post("/{name}/versions", response_model=VersionPublic, status_code=201, responses=errors(409, 422))
async def publish_version(
    name: str,
    caller: AdminCaller,
    adapters: AdaptersDep,
    files: Annotated[list[UploadFile], File(description="adapter_config.json + adapter_model.safetensors, or one .tar.gz/.zip")],
    kind: Annotated[AdapterKind, Form()] = "policy",
    alias: Annotated[list[str], Form(description="Aliases to point at the new version.")] = [],  # noqa: B006
) -> VersionPublic:
    """Publish an uploaded PEFT adapter as the next version of ``name``."""
    return await adapters.publish(name, kind, files, alias, caller)


@router.put("/{name}/aliases/{alias}", response_model=AliasPublic, responses=errors(409))
async def set_alias(name: str, alias: str, update: AliasUpdate, _: AdminCaller, adapters: AdaptersDep) -> AliasPublic:
    """Point an alias at a version (compare-and-swap with ``expected``); the engine follows."""
    return await adapters.set_alias(name, alias, update)


@router.delete("/{name}/aliases/{alias}", response_model=AliasPublic, responses=errors(409))
async def delete_alias(name: str, alias: str, _: AdminCaller, adapters: AdaptersDep) -> AliasPublic:
    """Remove an alias."""
    return await adapters.delete_alias(name, alias)


@router.post("/{ref}/load", response_model=ResidencyPublic, responses=errors(409, 422, 502))
async def load_adapter(ref: str, _: AdminCaller, adapters: AdaptersDep) -> ResidencyPublic:
    """Load ``name@version|alias`` into host memory and a LoRA slot ahead of traffic."""
    return await adapters.load(ref)


@router.post("/{ref}/pin", response_model=ResidencyPublic, responses=errors(409, 422, 502))
async def pin_adapter(ref: str, body: PinRequest, _: AdminCaller, adapters: AdaptersDep) -> ResidencyPublic:
    """Pin (never evict) or unpin an adapter version."""
    return await adapters.pin(ref, body.pinned)


@router.post("/{ref}/unload", status_code=204, responses=errors(409))
async def unload_adapter(ref: str, _: AdminCaller, adapters: AdaptersDep) -> None:
    """Drop an adapter version from its slot and host memory (409 while requests use it)."""
    await adapters.unload(ref)
