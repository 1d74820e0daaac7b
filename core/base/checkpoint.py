"""The configured base's tokenizer, and its model on the configured device and dtype."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from core.base.folders import base_model_path
from core.settings import Dtype, Settings


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: Dtype, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def load_tokenizer(settings: Settings) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(base_model_path(settings))
    if tokenizer.pad_token is None:  # Llama 2 ships without one
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_base_model(settings: Settings) -> PreTrainedModel:
    """The base causal LM on the configured device and dtype, in eval mode, frozen."""
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    model = AutoModelForCausalLM.from_pretrained(
        base_model_path(settings), dtype=dtype, use_safetensors=True
    )
    # transformers types its `to` through functools.wraps(nn.Module.to), which loses the bound self.
    model.to(device).eval().requires_grad_(False)  # type: ignore[arg-type]
    return model
