"""The embedded tiny Llama: built locally, deterministic, loadable as any HF checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from core.base.checkpoint import load_base_model, load_tokenizer
from core.base.folders import base_model_info
from core.base.info import BaseModelInfo
from core.base.tiny_llama import build_tiny_llama
from core.settings import Settings


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path, tiny_llama_dir):
    again = build_tiny_llama(tmp_path / "again", seed=0)
    other = build_tiny_llama(tmp_path / "other", seed=1)
    reference = load_file(tiny_llama_dir / "model.safetensors")
    same = load_file(again / "model.safetensors")
    different = load_file(other / "model.safetensors")
    assert reference.keys() == same.keys()
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    assert not torch.equal(reference["model.embed_tokens.weight"], different["model.embed_tokens.weight"])
    assert (tiny_llama_dir / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()


def test_loads_with_plain_auto_classes_and_generates(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    batch = tokenizer(["Hello there, how are you?"], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, batch["input_ids"].shape[1] + 4)
    assert batch["input_ids"][0, 0].item() == tokenizer.bos_token_id


def test_tokenizer_round_trips_any_text_and_has_a_chat_template(settings):
    tokenizer = load_tokenizer(settings)
    text = "Grüße, 東京! ✓ tabs\tand\nnewlines"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids
    assert {tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token} == {"<s>", "</s>", "<pad>"}
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"


def test_tiny_llama_by_name_is_built_under_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path, device="cpu", base_model="tiny-llama")
    model = load_base_model(settings)
    assert (tmp_path / "models" / "tiny-llama-seed0" / "config.json").is_file()
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert not any(p.requires_grad for p in model.parameters())
    assert base_model_info(settings).model_id == "tiny-llama"


def test_dtype_comes_from_settings(settings):
    model = load_base_model(Settings(**{**settings.model_dump(), "dtype": "bfloat16"}))
    assert model.dtype == torch.bfloat16


def test_fingerprint_depends_on_architecture_not_on_weights(tmp_path, tiny_llama_dir, settings):
    other_seed = Settings(data_dir=tmp_path, base_model=str(build_tiny_llama(tmp_path / "s1", seed=1)))
    assert base_model_info(other_seed).fingerprint == base_model_info(settings).fingerprint


def test_a_missing_checkpoint_folder_is_a_clear_error(tmp_path):
    settings = Settings(data_dir=tmp_path, base_model=str(tmp_path / "nope"))
    try:
        base_model_info(settings)
    except FileNotFoundError as e:
        assert "config.json" in str(e) and "nope" in str(e)
    else:
        raise AssertionError("expected FileNotFoundError")


def test_the_fingerprint_read_from_config_json_equals_the_one_transformers_derives(tmp_path):
    # A Llama-2-7b-hf config.json names neither head_dim nor (in older copies) the KV heads:
    # both must be derived as LlamaConfig derives them, or its adapters would stop matching.
    llama2 = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 32,
        "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
    }
    (tmp_path / "config.json").write_text(json.dumps(llama2))
    from_json = BaseModelInfo.from_folder("llama2", tmp_path)
    from_transformers = BaseModelInfo.from_config("llama2", AutoConfig.from_pretrained(tmp_path))
    assert from_json == from_transformers
    assert from_json.projections["k_proj"] == (4096, 4096)


def test_the_registry_and_its_cli_import_neither_torch_nor_transformers():
    code = (
        "import sys, core.registry, training.cli_registry; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
