"""What a run reads from the registry: the adapters it starts from, and where aliases point.

A reference is ``NAME@alias``, ``NAME@N`` or a local PEFT folder (``is_folder_ref``); registry
versions are fetched (sha256-verified) into the local cache and held there until ``close_run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import NotFound
from training.config import is_folder_ref
from training.run import RunContext

if TYPE_CHECKING:  # core.registry imports boto3: loaded on first use only, not at import
    from core.registry import Manifest


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
