"""What publishing refuses, each with an error saying what is wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from core.base.tiny_llama import tiny_llama_config
from core.errors import InvalidAdapter, InvalidName
from core.registry import Registry, open_registry
from tests.adapters import make_adapter
from tests.settings_variants import updated


@pytest.fixture
def other_base_dir(tmp_path):
    """A Llama with other dimensions (hidden 32): its adapters do not fit the tiny base."""
    config: LlamaConfig = tiny_llama_config()
    config.hidden_size, config.intermediate_size = 32, 86
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "other-base")
    return tmp_path / "other-base"


def test_an_adapter_for_another_base_model_is_refused(registry: Registry, tmp_path, other_base_dir):
    folder = make_adapter(other_base_dir, tmp_path / "foreign")
    with pytest.raises(InvalidAdapter, match="made for another base model"):
        registry.publish(folder, "summarize")
    assert registry.list_adapters() == []


def test_a_version_registered_for_another_base_is_refused_at_fetch(
    registry_settings, registry: Registry, tmp_path, other_base_dir, settings
):
    from core.base.folders import base_model_info

    other_settings = updated(settings, base_model=str(other_base_dir), base_model_id="other")
    other_registry = open_registry(registry_settings, base_model_info(other_settings))
    other_registry.publish(make_adapter(other_base_dir, tmp_path / "foreign"), "summarize")
    with pytest.raises(InvalidAdapter, match="made for base 'other'"):
        registry.fetch("summarize", 1)


def test_pickle_weights_are_refused(registry: Registry, adapter_dir):
    (adapter_dir / "adapter_model.bin").write_bytes(b"not loaded, ever")
    with pytest.raises(InvalidAdapter, match="adapter_model.bin would need unpickling"):
        registry.publish(adapter_dir, "summarize")


def test_missing_or_broken_files_are_refused(registry: Registry, adapter_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(adapter_dir, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(InvalidAdapter, match="not a readable safetensors"):
        registry.publish(broken, "summarize")
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(InvalidAdapter, match="not valid JSON"):
        registry.publish(broken, "summarize")
    (broken / "adapter_config.json").unlink()
    with pytest.raises(InvalidAdapter, match="no adapter_config.json"):
        registry.publish(broken, "summarize")
    with pytest.raises(InvalidAdapter, match="does not exist"):
        registry.publish(tmp_path / "missing", "summarize")


def test_size_bombs_in_the_files_are_refused_unread(registry: Registry, adapter_dir, tmp_path):
    bomb = tmp_path / "bomb"
    shutil.copytree(adapter_dir, bomb)
    config = json.loads((bomb / "adapter_config.json").read_text())
    (bomb / "adapter_config.json").write_text(json.dumps(config) + " " * (2 << 20))
    with pytest.raises(InvalidAdapter, match="adapter_config.json is over 1048576 bytes"):
        registry.publish(bomb, "summarize")
    (bomb / "adapter_config.json").write_text(json.dumps(config))
    # A safetensors header that claims 2**60 bytes: refused, never allocated.
    (bomb / "adapter_model.safetensors").write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    with pytest.raises(InvalidAdapter, match="not a readable safetensors"):
        registry.publish(bomb, "summarize")
    assert registry.list_adapters() == []


def test_unsupported_lora_variants_are_refused(registry: Registry, adapter_dir):
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    (adapter_dir / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(InvalidAdapter, match="DoRA is not supported"):
        registry.publish(adapter_dir, "summarize")


def test_rank_above_the_limit_is_refused(registry_settings, base_info, new_adapter):
    registry = open_registry(updated(registry_settings, max_lora_rank=8), base_info)
    with pytest.raises(InvalidAdapter, match="rank 16 exceeds max_lora_rank 8"):
        registry.publish(new_adapter(rank=16), "summarize")


def test_kind_must_match_the_weights(registry: Registry, adapter_dir, reward_dir):
    with pytest.raises(InvalidAdapter, match="needs a score head"):
        registry.publish(adapter_dir, "summarize", "reward")
    with pytest.raises(InvalidAdapter, match="register it with kind 'reward'"):
        registry.publish(reward_dir, "summarize", "policy")


BAD_NAMES = ["../x", "a/b", "", "A", "x" * 200, "-lead", "a b", "a\x00", "a\\b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_everywhere(registry: Registry, adapter_dir, name):
    with pytest.raises(InvalidName, match="invalid adapter name"):
        registry.publish(adapter_dir, name)
    with pytest.raises(InvalidName):
        registry.resolve(name)
    with pytest.raises(InvalidName):
        registry.set_alias(name, "production", 1)
    assert registry.list_adapters() == []


def test_a_reference_is_not_a_name(registry: Registry, adapter_dir):
    with pytest.raises(InvalidName, match="invalid adapter name 'a@b'"):
        registry.publish(adapter_dir, "a@b")


@pytest.mark.parametrize("alias", ["../x", "a/b", "", "Prod", "1st", "x" * 200])
def test_bad_aliases_are_refused(registry: Registry, adapter_dir, alias):
    registry.publish(adapter_dir, "summarize")
    with pytest.raises(InvalidName):
        registry.set_alias("summarize", alias, 1)
    with pytest.raises(InvalidName):
        registry.resolve(f"summarize@{alias}")
