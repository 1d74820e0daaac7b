"""The benchmark model: a Llama of the size the issues name (8 layers, hidden 512, vocab 32000,
58M parameters), random weights from seed 0, with the locally trained tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from core.base.tiny_llama import train_tiny_tokenizer


def build_bench_llama(path: Path) -> Path:
    """Save the benchmark Llama to ``path`` (reused if already there) and return ``path``."""
    if (path / "config.json").is_file():
        return path
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(path)
    train_tiny_tokenizer().save_pretrained(path)
    return path
