"""The base model: the embedded tiny Llama, or any Llama-family checkpoint folder.

``tiny-llama`` is built once, locally, with no network: a byte-level BPE tokenizer trained with
``tokenizers`` on a small corpus shipped in ``core/assets``, and a ``LlamaForCausalLM`` with
random weights from a fixed seed. It is saved as an ordinary Hugging Face folder under
``data_dir/models``, so it loads exactly as a real Llama 2 checkpoint does.

``BaseModelInfo`` describes the served base for adapter validation: an id, a fingerprint of the
architecture, and the (in, out) features of each projection a LoRA may target.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from core.settings import Settings

log = logging.getLogger(__name__)

TINY_LLAMA = "tiny-llama"
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

    corpus = (Path(__file__).parent / "assets" / "tiny_corpus.txt").read_text().splitlines()
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
    """Write the tiny Llama (weights from ``seed``) and its tokenizer to ``path`` atomically.

    Built in a temporary sibling folder and renamed, so concurrent builders (server, worker,
    test processes) never see a half-written folder; the loser of the race discards its copy.
    """
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        tokenizer = train_tiny_tokenizer()
        config = tiny_llama_config(vocab_size=len(tokenizer))
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.random.set_rng_state(generator_state)
        model.generation_config.pad_token_id = config.pad_token_id
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, path)
        except OSError:  # another process won the race: its copy is identical
            if not (path / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built tiny Llama (seed %s) at %s", seed, path)
    return path


def base_model_path(settings: Settings) -> Path:
    """The checkpoint folder of the configured base model, building tiny-llama if needed."""
    if settings.base_model == TINY_LLAMA:
        return build_tiny_llama(
            settings.data_dir / "models" / f"tiny-llama-seed{settings.tiny_llama_seed}",
            seed=settings.tiny_llama_seed,
        )
    path = Path(settings.base_model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"base_model {settings.base_model!r} is neither 'tiny-llama' nor a folder with a "
            "config.json (a Hugging Face checkpoint such as a Llama-2-7b-hf download)"
        )
    return path


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


# Projections a LoRA may target in a Llama decoder layer, and their (in, out) features.
def projection_shapes(config: PretrainedConfig) -> dict[str, tuple[int, int]]:
    hidden = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    q_out = config.num_attention_heads * head_dim
    return {
        "q_proj": (hidden, q_out),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (q_out, hidden),
        "gate_proj": (hidden, config.intermediate_size),
        "up_proj": (hidden, config.intermediate_size),
        "down_proj": (config.intermediate_size, hidden),
    }


_FINGERPRINT_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
)


def config_fingerprint(config: PretrainedConfig) -> str:
    """sha256 of the architecture fields an adapter depends on (shapes and layer count)."""
    fields = {name: getattr(config, name, None) for name in _FINGERPRINT_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class BaseModelInfo:
    """What adapters are checked against: the served base's id, fingerprint and shapes."""

    model_id: str
    fingerprint: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    projections: dict[str, tuple[int, int]]

    @classmethod
    def from_config(cls, model_id: str, config: PretrainedConfig) -> BaseModelInfo:
        return cls(
            model_id=model_id,
            fingerprint=config_fingerprint(config),
            num_layers=config.num_hidden_layers,
            hidden_size=config.hidden_size,
            vocab_size=config.vocab_size,
            projections=projection_shapes(config),
        )


def base_model_info(settings: Settings) -> BaseModelInfo:
    """Describe the configured base from its config.json alone (no weights are loaded)."""
    path = base_model_path(settings)
    model_id = settings.base_model_id or (
        settings.base_model if settings.base_model == TINY_LLAMA else path.name
    )
    return BaseModelInfo.from_config(model_id, AutoConfig.from_pretrained(path))
