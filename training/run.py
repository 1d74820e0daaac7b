"""What every training run does around its algorithm: set up, then register and promote.

ctx = start_run(config)            seeds, processes, base model info, registry
... fit / evaluate ...
result = finish_run(ctx, ...)      save the adapter, publish it with metrics and lineage,
                                   move NAME@candidate, maybe NAME@production
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from core.base.checkpoint import resolve_device
from core.base.folders import base_model_info
from core.base.info import BaseModelInfo
from core.errors import NotFound
from core.settings import Settings
from training.config import TrainConfig, config_dict, is_folder_ref
from training.distributed import World, close_world, init_world
from training.gates import Promotion, promote
from training.progress import MetricsSink, Progress
from training.shared_base import LoraSpec, SharedBase

if TYPE_CHECKING:  # core.registry imports boto3: loaded on first use only, not at import
    from core.registry import Manifest, Registry

log = logging.getLogger(__name__)


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


def resolve_adapter(ctx: RunContext, ref: str) -> tuple[Path, Manifest | None]:
    """A local PEFT folder for ``ref``: a folder path as is, else a registry reference
    fetched (and sha256-verified) into the local cache, held there until close_run.
    Returns (folder, manifest or None)."""
    if is_folder_ref(ref):
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise ValueError(f"adapter folder {ref} does not exist")
        return path, None
    manifest = ctx.registry.resolve(ref)
    folder = ctx.held.enter_context(ctx.registry.checkout(manifest.adapter, manifest.version))
    return folder, manifest


def find_parent(ctx: RunContext, ref: str) -> tuple[Path, Manifest | None] | None:
    """The previous version to compare with, or None when the adapter has none yet."""
    try:
        return resolve_adapter(ctx, ref)
    except NotFound:
        return None


def current_alias(ctx: RunContext, adapter: str, alias: str) -> int | None:
    """Where ``adapter@alias`` points now (None if nowhere, or when the run registers nothing)."""
    if not ctx.config.register:
        return None
    try:
        return ctx.registry.aliases(adapter).get(alias)
    except NotFound:
        return None


def code_revision() -> dict[str, Any] | None:
    """The git commit of this code and whether the tree had changes (None outside git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def build_lineage(
    ctx: RunContext, algorithm: str, data: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """What a version was made from: data (file hashes), config, base, code, parents."""
    lineage = {
        "algorithm": algorithm,
        "data": data,
        "config": config_dict(ctx.config),
        "base_model_id": ctx.base_info.model_id,
        "base_fingerprint": ctx.base_info.fingerprint,
        "code_revision": code_revision(),
        "job_id": ctx.config.job_id,
        "world_size": ctx.world.size,
        "torch": torch.__version__,
    }
    lineage.update(extra)
    return lineage


def finish_run(
    ctx: RunContext,
    shared: SharedBase,
    adapter_slot: str,
    metrics: dict[str, Any],
    lineage: dict[str, Any],
    *,
    expected_production: int | None,
    history: list[dict[str, Any]] | None = None,
) -> RunResult:
    """Main process only: save the adapter, publish it, apply the gates."""
    config = ctx.config
    result = RunResult(metrics=metrics, lineage=lineage, history=history or [])
    with tempfile.TemporaryDirectory(prefix="loraloop-adapter-") as tmp:
        folder = shared.save_adapter(adapter_slot, Path(tmp) / config.adapter)
        if config.output_dir:
            result.folder = Path(config.output_dir).expanduser()
            result.folder.parent.mkdir(parents=True, exist_ok=True)
            if result.folder.exists():
                shutil.rmtree(result.folder)
            shutil.copytree(folder, result.folder)
        if config.register:
            result.manifest = ctx.registry.publish(
                folder,
                config.adapter,
                config.kind,
                metrics=metrics,
                lineage=lineage,
                created_by=config.created_by,
            )
            result.promotion = promote(
                ctx.registry,
                config.adapter,
                result.manifest.version,
                config.gates,
                metrics,
                requested=config.promote,
                expected_production=expected_production,
            )
    log.info("%s run of %s finished: %s", lineage["algorithm"], config.adapter, metrics)
    return result
