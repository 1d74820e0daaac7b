"""GET /v1/models, as OpenAI serves it."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from service.auth import InferCaller
from service.models.protocol import ModelList
from service.models.service import ModelsService

router = APIRouter(tags=["openai"])  # an OpenAI endpoint: listed with the other two


async def get_models(request: Request) -> ModelsService:
    return request.app.state.services.models


ModelsDep = Annotated[ModelsService, Depends(get_models)]


@router.get("/v1/models", response_model=ModelList)
async def list_models(_: InferCaller, models: ModelsDep) -> ModelList:
    """The base model and every adapter with a production alias (OpenAI's model list)."""
    return await asyncio.to_thread(models.list)
