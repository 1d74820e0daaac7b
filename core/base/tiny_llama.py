"""The embedded tiny Llama: random weights from a fixed seed, a tokenizer trained locally.

Built once with no network: a byte-level BPE tokenizer trained with ``tokenizers`` on a small
corpus shipped in ``core/assets``, and a ``LlamaForCausalLM`` with random weights from a seed.
It is saved as an ordinary Hugging Face folder, so it loads exactly as a real Llama 2
checkpoint does; tests use it where speed matters more than what the model says.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from core.base.folders import build_once

log = logging.getLogger(__name__)

TINY_VOCAB_SIZE = 1024
BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"

# Llama 2 chat format, so a real Llama-2-chat checkpoint and the tiny model format alike.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set messages = messages[1:] %}"
    "{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ '[INST] ' }}{% if loop.first and system %}{{ '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{% endif %}"
    "{{ message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)


def tiny_llama_config(vocab_size: int = TINY_VOCAB_SIZE) -> LlamaConfig:
    """2 layers, hidden 64, grouped-query attention (4 heads, 2 KV heads): small enough for CPU
    tests, shaped like Llama 2 so every code path (GQA, RoPE, SwiGLU) is exercised."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )


def train_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """A byte-level BPE (any text encodes, no <unk> in practice) trained on the shipped corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    corpus = (Path(__file__).parents[1] / "assets" / "tiny_corpus.txt").read_text().splitlines()
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS, PAD],  # ids 0..3, matching tiny_llama_config
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        padding_side="left",
    )


def build_tiny_llama(path: Path, seed: int = 0) -> Path:
    """Write the tiny Llama (weights from ``seed``) and its tokenizer to ``path``, once."""

    def write(folder: Path) -> None:
        tokenizer = train_tiny_tokenizer()
        config = tiny_llama_config(vocab_size=len(tokenizer))
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.random.set_rng_state(generator_state)
        model.generation_config.pad_token_id = config.pad_token_id
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    path = Path(path)
    if build_once(path, write):
        log.info("built tiny Llama (seed %s) at %s", seed, path)
    return path
