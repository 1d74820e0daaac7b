"""The long-lived service objects, built once at start-up and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from core.base_model import BaseModelInfo
from core.registry import Registry
from core.settings import Settings
from service.auth import Authenticator
from service.engine import Engine
from service.metrics import ServiceMetrics

if TYPE_CHECKING:
    from service.adapters.serving import AdapterService
    from service.openai.serving import OpenAIServing


@dataclass
class ServiceState:
    settings: Settings
    base_info: BaseModelInfo
    registry: Registry
    engine: Engine
    metrics: ServiceMetrics
    authenticator: Authenticator
    openai: OpenAIServing
    adapters: AdapterService


def get_state(request: Request) -> ServiceState:
    return request.app.state.services
