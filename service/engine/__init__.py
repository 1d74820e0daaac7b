"""The inference engine: one base model, many LoRA adapters per batch (no HTTP in here).

Public API::

    Engine(settings, registry)                       built once at start-up; close() at shutdown
    await engine.submit(prompt_ids, adapter, params) -> async iterator of TokenEvent
    engine.generate(prompt_ids, adapter, params)     async generator of TokenEvent
    await engine.complete(prompt_ids, adapter, params) -> GenerationResult
    await engine.score(reward, prompt, completions) -> list[float]
    await engine.load(ref) / pin(ref, pinned) / unload(ref); await engine.refresh_aliases()
    engine.residency() -> list[AdapterStatus]; engine.stats() -> EngineStats
"""

from service.engine.adapters import AdapterStatus
from service.engine.admission import EngineClosed
from service.engine.engine import Engine, EngineStats
from service.engine.hotswap import AliasMove
from service.engine.request import FinishReason, GenerationResult, TokenEvent, Usage
from service.engine.sampling import SamplingParams
from service.engine.stream import TokenStream

__all__ = [
    "AdapterStatus",
    "AliasMove",
    "Engine",
    "EngineClosed",
    "EngineStats",
    "FinishReason",
    "GenerationResult",
    "SamplingParams",
    "TokenEvent",
    "TokenStream",
    "Usage",
]
