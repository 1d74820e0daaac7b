"""What a registered version was made from: data hashes, config, base, code revision, world.

Recorded in the version's manifest (``lineage``), so any version can be traced to its inputs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import torch

from training.config import config_dict
from training.run import RunContext


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
