"""The end of a run, on the main process: save the trained adapter as a PEFT folder (and a
copy in ``output_dir``, if set), publish it as a new version with its metrics and lineage (when
``register`` is on), move NAME@candidate to it, and NAME@production too when promotion was
asked for and the gates pass (training/gates.py).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from training.gates import promote
from training.run import RunContext, RunResult
from training.shared_base import SharedBase

log = logging.getLogger(__name__)


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
