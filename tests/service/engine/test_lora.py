"""The mixed-adapter LoRA layer: every row of one forward pass matches peft with its adapter."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import LlamaForCausalLM

from core.base.checkpoint import load_base_model
from core.base.info import BaseModelInfo
from core.errors import InvalidAdapter
from core.settings import Settings
from service.engine.batch import compaction
from service.engine.lora import ALL_PROJECTIONS, LoraModel
from service.engine.weights import read_adapter

PROMPTS = [[1, 50, 60, 70, 80, 90], [1, 7, 300], [1, 400, 401, 402, 403], [1, 99, 98, 97]]


def _read(folder: Path, base_info: BaseModelInfo, **kw):
    options = {
        "kind": "policy",
        "max_rank": 64,
        "modules": frozenset(ALL_PROJECTIONS),
        "dtype": torch.float32,
    }
    return read_adapter(folder, base_info, **(options | kw))


def _left_pad(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[3] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


@pytest.fixture
def lora_model(settings: Settings, base_info: BaseModelInfo, adapter_dirs: dict[str, Path]):
    model = load_base_model(settings)
    lora = LoraModel(model, ALL_PROJECTIONS, num_slots=4, max_rank=16)
    for slot, name in enumerate(["alpha", "beta", "gamma", "delta"], start=1):
        lora.load(slot, _read(adapter_dirs[name], base_info))
    return lora


@torch.no_grad()
def _peft_last_logits(tiny_llama_dir: Path, folder: Path | None, prompt: list[int]) -> torch.Tensor:
    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    if folder is not None:
        model = PeftModel.from_pretrained(model, folder).eval()
    return model(input_ids=torch.tensor([prompt])).logits[0, -1]


@torch.no_grad()
def test_mixed_batch_rows_match_peft_with_their_own_adapter(
    lora_model, tiny_llama_dir, adapter_dirs
):
    # rows: alpha, base, gamma, delta -- different ranks and target modules in one pass
    names = ["alpha", None, "gamma", "delta"]
    slots = [1, 0, 3, 4]
    ids, mask, positions = _left_pad(PROMPTS)
    with lora_model.use(lora_model.gather(slots)):
        logits = lora_model.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    for row, name in enumerate(names):
        folder = adapter_dirs[name] if name else None
        expected = _peft_last_logits(tiny_llama_dir, folder, PROMPTS[row])
        torch.testing.assert_close(logits[row, -1], expected, rtol=1e-4, atol=1e-4)
    # the adapters really change the output
    assert not torch.allclose(logits[0, -1], _peft_last_logits(tiny_llama_dir, None, PROMPTS[0]))


@torch.no_grad()
def test_batch_rows_equal_gathered_rows_after_join_and_leave(lora_model):
    ids, mask, positions = _left_pad(PROMPTS)
    batch = lora_model.batch_rows(capacity=8)
    batch.join([2, 0])
    batch.join([4, 1, 3])  # beta, base, delta, alpha, gamma
    batch.keep(compaction([0, 2, 3, 4], 5))  # base leaves: gamma moves into its position
    assert batch.slots == [2, 3, 4, 1]
    batch.keep(compaction([0, 3], 4))  # two leave
    batch.join([4, 3])  # and two join
    assert batch.slots == [2, 1, 4, 3]
    with lora_model.use(batch):
        got = lora_model.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    with lora_model.use(lora_model.gather([2, 1, 4, 3])):
        want = lora_model.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(got, want)


@torch.no_grad()
def test_loading_a_slot_replaces_the_previous_adapter_and_keeps_base_weights(
    lora_model, base_info, adapter_dirs
):
    base_before = {k: v.clone() for k, v in lora_model.model.state_dict().items()}
    lora_model.load(4, _read(adapter_dirs["alpha"], base_info))  # delta (incl. down_proj) -> alpha
    ids, mask, positions = _left_pad(PROMPTS[:1])
    with lora_model.use(lora_model.gather([4])):
        got = lora_model.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    with lora_model.use(lora_model.gather([1])):
        want = lora_model.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(got, want)
    lora_model.clear(4)
    with lora_model.use(lora_model.gather([4])):
        cleared = lora_model.model(
            input_ids=ids, attention_mask=mask, position_ids=positions
        ).logits
    plain = lora_model.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(cleared, plain, rtol=0, atol=0)
    for key, value in lora_model.model.state_dict().items():
        torch.testing.assert_close(value, base_before[key], rtol=0, atol=0)


def test_adapters_that_do_not_fit_are_refused(base_info, adapter_dirs):
    with pytest.raises(InvalidAdapter, match="max_lora_rank"):
        _read(adapter_dirs["delta"], base_info, max_rank=8)
    with pytest.raises(InvalidAdapter, match="not served"):
        _read(adapter_dirs["gamma"], base_info, modules=frozenset({"q_proj", "v_proj"}))
    with pytest.raises(InvalidAdapter, match="score head"):
        _read(adapter_dirs["judge"], base_info)  # a reward adapter loaded as a policy
    weights = _read(adapter_dirs["judge"], base_info, kind="reward")
    assert weights.score is not None and weights.score.shape == (1, base_info.hidden_size)


def test_preallocated_lora_memory_follows_the_documented_formula_and_is_logged(make_engine, caplog):
    caplog.set_level(logging.INFO, logger="service.engine.engine")
    engine = make_engine(max_active_adapters=3, max_lora_rank=8, max_batch_size=5)
    layers = engine.lora.layers
    in_plus_out = sum(layer.base.in_features + layer.base.out_features for layer in layers)
    # docs/configuration.md: (slots + 1 + batch) x (rank x sum(in + out) + one scaling per
    # projection) x bytes per element (float32 here)
    expected = (3 + 1 + 5) * (8 * in_plus_out + len(layers)) * 4
    assert engine.lora.nbytes + engine.scheduler.rows.nbytes == expected
    assert f"LoRA buffers {expected / 2**20:.1f} MiB preallocated" in caplog.text
