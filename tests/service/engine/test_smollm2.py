"""The engine on the real embedded base, SmolLM2-135M-Instruct (grouped-query attention 9/3,
tied embeddings): every row of a mixed-adapter batch equals peft with that row's adapter, token
for token under greedy decoding, and ``n`` seeded choices are reproducible. Kept short (a few
tokens, three small adapters): the rest of the engine's tests run on the tiny Llama."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.base.folders import SMOLLM2, base_model_info
from core.registry import open_registry
from core.settings import Settings
from service.engine import Engine, SamplingParams
from tests.adapters import make_adapter
from tests.service.engine.engine_calls import run

# Small LoRAs on attention (GQA: k/v are 576 -> 192) and MLP projections. A small B keeps the
# logits peaked, so greedy decoding meets no near-ties for float rounding to flip.
SPECS = {
    "attn": {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "seed": 1},
    "mlp": {"rank": 2, "alpha": 4, "target_modules": ["gate_proj", "up_proj", "down_proj"], "seed": 2},
    "mixed": {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj", "down_proj"], "seed": 3},
}
QUESTIONS = [
    "Why do birds sing?",
    "Describe the ocean in a few words.",
    "What is the capital of France?",
    "Give me a tip for sleeping well.",
]
MAX_TOKENS = 6


@pytest.fixture(scope="module")
def smollm2_settings(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Settings:
    data = tmp_path_factory.mktemp("smollm2-engine")
    (data / "models").mkdir()
    (data / "models" / SMOLLM2).symlink_to(smollm2_dir)  # the session's conversion
    return Settings(
        data_dir=data, base_model=SMOLLM2, device="cpu", dtype="float32", alias_poll_seconds=0,
        start_worker=False, max_active_adapters=3, max_batch_size=8, max_lora_rank=8,
    )


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("smollm2-adapters")
    return {
        name: make_adapter(smollm2_dir, root / name, scale=0.05, **spec)
        for name, spec in SPECS.items()
    }


@pytest.fixture(scope="module")
def engine(smollm2_settings: Settings, adapters: dict[str, Path]) -> Iterator[Engine]:
    info = base_model_info(smollm2_settings)
    registry = open_registry(smollm2_settings, info)
    for name, folder in adapters.items():
        registry.set_alias(name, "production", registry.publish(folder, name).version)
    engine = Engine(smollm2_settings, registry, base_info=info)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def prompts(smollm2_dir: Path) -> list[list[int]]:
    """The questions as chat turns through SmolLM2's own template, as the chat API sends them."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
            return_dict=False,
        )
        for q in QUESTIONS
    ]


@torch.no_grad()
def peft_greedy(smollm2_dir: Path, folder: Path | None, ids: list[int]) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    if folder is not None:
        model = PeftModel.from_pretrained(model, folder).eval()
    out = model.generate(
        input_ids=torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=MAX_TOKENS,
        do_sample=False,
        pad_token_id=model.config.eos_token_id,
    )
    return out[0, len(ids) :].tolist()


def test_mixed_batch_rows_equal_peft_with_their_own_adapter(engine, adapters, prompts, smollm2_dir):
    # three adapters and the base in one batch; each adapter's prompt also runs on the base
    cases = [("attn", 0), (None, 0), ("mlp", 1), (None, 1), ("mixed", 3), (None, 3), (None, 2)]
    greedy = SamplingParams(max_tokens=MAX_TOKENS, temperature=0, logprobs=0)

    async def main():
        return await asyncio.gather(
            *[engine.complete(prompts[i], name, greedy) for name, i in cases]
        )

    completions = run(main(), timeout=300)
    on_base = {i: c for (name, i), c in zip(cases, completions, strict=True) if name is None}
    for (name, i), completion in zip(cases, completions, strict=True):
        expected = peft_greedy(smollm2_dir, adapters[name] if name else None, prompts[i])
        assert completion.token_ids == expected, name
        if name is not None:  # the row ran with its adapter: its probabilities are not the base's
            assert str(completion.version) == f"{name}@1"
            assert completion.logprobs != on_base[i].logprobs, name


def test_n_seeded_choices_are_reproducible(engine, prompts):
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, seed=42, ignore_eos=True)

    async def main():
        first = await engine.complete_choices(prompts[0], "attn", params, n=3)
        crowded = await asyncio.gather(
            engine.complete_choices(prompts[0], "attn", params, n=3),
            engine.complete(prompts[1], "mlp", SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0)),
        )
        return first, crowded[0]

    first, again = run(main(), timeout=300)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert len({tuple(c.token_ids) for c in first}) > 1  # the choices are not copies of one
