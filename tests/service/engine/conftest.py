"""Tiny PEFT adapters for the engine tests (random, non-zero B so every adapter changes outputs),
a registry that holds them, peft as the reference, and engines on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from core.base.info import BaseModelInfo
from core.registry import Registry, open_registry
from core.settings import Settings
from tests.adapters import make_adapter


@pytest.fixture(scope="session")
def adapter_dirs(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PEFT folders of four policy adapters and a reward adapter, made once per session."""
    # A mix of ranks and target modules; the test models are small, so these are cheap to make.
    # Each has alpha = 2 * rank and B ~ N(0, 0.3).
    specs = {
        "alpha": {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "seed": 1},
        "beta": {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "seed": 2},
        "gamma": {"rank": 2, "alpha": 4, "target_modules": ["gate_proj", "up_proj", "down_proj"], "seed": 3},
        "delta": {"rank": 16, "alpha": 32, "target_modules": ["q_proj", "o_proj", "down_proj"], "seed": 4},
    }
    root = tmp_path_factory.mktemp("adapters")
    dirs = {
        name: make_adapter(tiny_llama_dir, root / name, scale=0.3, **spec)
        for name, spec in specs.items()
    }
    dirs["judge"] = make_adapter(
        tiny_llama_dir, root / "judge", rank=4, alpha=8, target_modules=["q_proj", "v_proj"], seed=9,
        kind="reward", scale=0.3,
    )
    return dirs


@pytest.fixture
def registry(settings: Settings, base_info: BaseModelInfo) -> Registry:
    return open_registry(settings, base_info)


@pytest.fixture
def published(registry: Registry, adapter_dirs: dict[str, Path]) -> Registry:
    """A registry holding version 1 of every test adapter, each with alias production -> 1."""
    for name, folder in adapter_dirs.items():
        kind = "reward" if name == "judge" else "policy"
        m = registry.publish(folder, name, kind)
        registry.set_alias(name, "production", m.version)
    return registry


@pytest.fixture(scope="session")
def peft_reference(tiny_llama_dir: Path, adapter_dirs: dict[str, Path]) -> Iterator:
    """``generate(name | None, prompt_ids, n) -> list[int]``: greedy tokens from peft alone."""
    from peft import PeftModel

    cache: dict[str | None, torch.nn.Module] = {}

    def model_for(name: str | None):
        if name not in cache:
            base = LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
            cache[name] = (
                base if name is None else PeftModel.from_pretrained(base, adapter_dirs[name]).eval()
            )
        return cache[name]

    @torch.no_grad()
    def generate(name: str | None, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        model = model_for(name)
        out = model.generate(
            input_ids=torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=3,
        )
        return out[0, len(prompt_ids) :].tolist()

    yield generate


@pytest.fixture
def make_engine(settings: Settings, published: Registry, base_info: BaseModelInfo):
    """``make_engine(**settings_overrides) -> Engine`` on the published registry; closed after."""
    from service.engine import Engine

    engines = []

    def make(**overrides) -> Engine:
        defaults = {
            "max_active_adapters": 4,
            "max_batch_size": 8,
            "max_lora_rank": 16,
            "prefill_chunk_tokens": 64,
        }
        engine = Engine(
            settings.model_copy(update=defaults | overrides), published, base_info=base_info
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()
