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
from core.settings import Settings


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


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
    model.to(device).eval().requires_grad_(False)
    return model
