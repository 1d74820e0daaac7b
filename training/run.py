"""A training run's context and result: what every run sets up around its algorithm.

ctx = start_run(config)            seeds, processes, device, base model info, registry (lazy)
data = ...frozen_source(ctx, ...)  feedback:USE_CASE frozen into one snapshot for every process
... fit / evaluate ...             (training/resolve.py: adapters and aliases it reads)
result = finish_run(ctx, ...)      training/publish.py: save, publish with lineage, gates
close_run(ctx)                     release held registry folders and the process group
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from core.base.checkpoint import resolve_device
from core.base.folders import base_model_info
from core.base.info import BaseModelInfo
from core.settings import Settings
from training.config import TrainConfig
from training.distributed import World, close_world, init_world
from training.gates import Promotion
from training.progress import MetricsSink, Progress
from training.shared_base import LoraSpec

if TYPE_CHECKING:  # core.registry imports boto3: loaded on first use only, not at import
    from core.registry import Manifest, Registry


@dataclass
class RunContext:
    config: TrainConfig
    settings: Settings
    world: World
    device: torch.device
    base_info: BaseModelInfo
    given_registry: Registry | None = None
    sink: MetricsSink | None = None
    # Registry folders this run reads: held (never evicted from the cache) until close_run.
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def registry(self) -> Registry:
        """The registry, opened on first use (a run on local folders needs none)."""
        if self.given_registry is None:
            from core.registry import open_registry

            self.given_registry = open_registry(self.settings, self.base_info)
        return self.given_registry

    def progress(self, total: int, description: str) -> Progress:
        return Progress(
            total,
            description,
            metrics_file=self.config.metrics_file,
            sink=self.sink,
            enabled=self.world.is_main,
            show_bar=self.config.progress,
        )


@dataclass
class RunResult:
    """What a run produced: metrics, the registered version (if any), the promotion."""

    metrics: dict[str, Any]
    lineage: dict[str, Any]
    manifest: Manifest | None = None
    promotion: Promotion | None = None
    folder: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def version(self) -> int | None:
        return self.manifest.version if self.manifest is not None else None

    def summary(self) -> dict[str, Any]:
        """Metrics plus where the version went, for the final table."""
        out = dict(self.metrics)
        if self.manifest is not None:
            out["registered"] = self.manifest.ref
        if self.promotion is not None:
            adapter = self.manifest.adapter if self.manifest is not None else "?"
            out["candidate"] = f"{adapter}@candidate -> {self.promotion.version}"
            out["production"] = "moved" if self.promotion.production else self.promotion.reason
        if self.folder is not None:
            out["folder"] = str(self.folder)
        return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def lora_spec(config: TrainConfig) -> LoraSpec:
    """The shape of the run's new LoRA, from its config."""
    return LoraSpec(
        r=config.lora_rank,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        target_modules=tuple(config.target_modules),
    )


def start_run(
    config: TrainConfig,
    settings: Settings | None = None,
    registry: Registry | None = None,
    sink: MetricsSink | None = None,
) -> RunContext:
    settings = settings or Settings()
    device = resolve_device(settings.device)
    world = init_world(device)
    seed_everything(config.seed)
    return RunContext(config, settings, world, device, base_model_info(settings), registry, sink)


def close_run(ctx: RunContext) -> None:
    ctx.held.close()
    close_world(ctx.world)


def frozen_source(ctx: RunContext, source: str) -> str:
    """The data source every process reads: ``feedback:USE_CASE`` becomes one snapshot,
    taken by the main process."""
    from training.data import freeze_source

    frozen = ctx.world.broadcast_object(
        freeze_source(source, ctx.settings) if ctx.world.is_main else None
    )
    assert frozen is not None  # the main process's value, on every process
    return frozen
