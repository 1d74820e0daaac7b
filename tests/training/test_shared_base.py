"""One base copy, several adapters: formats plain peft loads, switching, padding, rollouts."""

from __future__ import annotations

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from core.reward_format import reward_input_ids
from training.batching import encode_prompt, pad
from training.rollout import (
    Rollout,
    response_mask_from,
    response_outputs,
    sample,
    scoring_inputs,
)
from training.shared_base import POLICY, REWARD, LoraSpec, SharedBase, load_shared_base, lora_config


def perturbed(shared: SharedBase, name: str, seed: int = 0) -> None:
    """Give adapter ``name`` non-zero LoRA B (and score) so it changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in shared.peft.named_parameters():
            if f".{name}." in param_name and ("lora_B" in param_name or "score" in param_name):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def two_adapters(settings) -> SharedBase:
    shared = load_shared_base(settings)
    shared.add_adapter(POLICY, lora_config("policy", LoraSpec(r=4, alpha=8)))
    shared.add_adapter(REWARD, lora_config("reward", LoraSpec(r=4, alpha=8)), trainable=False)
    perturbed(shared, POLICY, 1)
    perturbed(shared, REWARD, 2)
    return shared


def batch(shared: SharedBase, side: str):
    texts = ["Write about the sea:", "Write about a small old town by the river:"]
    return pad(
        [shared.tokenizer(t).input_ids for t in texts], shared.tokenizer.pad_token_id, side=side
    )


def test_saved_policy_adapter_gives_the_same_logits_under_plain_peft(settings, tmp_path) -> None:
    shared = two_adapters(settings)
    folder = shared.save_adapter(POLICY, tmp_path / "policy")
    ids = torch.tensor([shared.tokenizer("Write about tea and music:").input_ids])
    with torch.no_grad(), shared.adapter(POLICY):
        ours = shared(ids, torch.ones_like(ids))["logits"]
    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(settings.base_model), folder
    ).eval()
    with torch.no_grad():
        theirs = plain(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_disabled_adapters_are_the_base_and_switching_restores(settings) -> None:
    shared = two_adapters(settings)
    ids, mask = batch(shared, "right")
    plain = AutoModelForCausalLM.from_pretrained(settings.base_model).eval()
    with torch.no_grad():
        with shared.adapter(None):
            reference = shared(ids, mask)["logits"]
        with shared.adapter(POLICY):
            policy = shared(ids, mask)["logits"]
        base = plain(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(reference[real], base[real], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(policy[real], reference[real], atol=1e-3)
    assert shared.peft.active_adapter == REWARD  # the last one added; contexts restored it
    # only the trainable adapter requires grad, whichever adapter is active
    with shared.adapter(REWARD):
        grads = {n for n, p in shared.named_parameters() if p.requires_grad}
    assert grads and all(".policy." in n for n in grads)


def test_scores_and_logits_do_not_depend_on_padding_side(settings) -> None:
    shared = two_adapters(settings)
    left, left_mask = batch(shared, "left")
    right, right_mask = batch(shared, "right")
    with torch.no_grad(), shared.adapter(REWARD):
        torch.testing.assert_close(
            shared.scores(left, left_mask), shared.scores(right, right_mask), atol=1e-5, rtol=1e-5
        )
        single = shared.scores(
            right[:1, : int(right_mask[0].sum())], right_mask[:1, : int(right_mask[0].sum())]
        )
        torch.testing.assert_close(single, shared.scores(left, left_mask)[:1], atol=1e-5, rtol=1e-5)


def test_response_mask_stops_after_the_first_eos() -> None:
    response = torch.tensor([[5, 2, 3, 3], [5, 6, 7, 8], [2, 9, 2, 3]])
    assert response_mask_from(response, eos_id=2).tolist() == [
        [1, 1, 0, 0],
        [1, 1, 1, 1],
        [1, 0, 0, 0],
    ]


def test_rollouts_are_scored_as_the_server_scores_text(settings) -> None:
    """PPO's reward input is tokenizer(prompt + decoded response): what /v1/rewards computes."""
    shared = two_adapters(settings)
    tok = shared.tokenizer
    prompt, words = (
        "Write about tea:",
        tok(" warm tea and music", add_special_tokens=False).input_ids,
    )
    response = torch.tensor([words + [tok.eos_token_id, tok.pad_token_id]])
    query = torch.tensor([tok(prompt).input_ids])
    rollout = Rollout(
        query, torch.ones_like(query), response, response_mask_from(response, tok.eos_token_id)
    )
    ids, mask = scoring_inputs(shared, rollout, [prompt])
    assert ids[0][mask[0].bool()].tolist() == reward_input_ids(tok, prompt, " warm tea and music")


def test_sampling_is_seeded_and_training_reads_the_sampled_log_probs(settings) -> None:
    shared = two_adapters(settings)
    queries = [
        encode_prompt(shared.tokenizer, p, "Be brief.", 64)
        for p in ("Write about tea:", "Write about a long day at sea:")
    ]
    with shared.adapter(POLICY):
        first = sample(shared, queries, 6, temperature=0.7, seed=3)
        again = sample(shared, queries, 6, temperature=0.7, seed=3)
        other = sample(shared, queries, 6, temperature=0.7, seed=4)
        with torch.no_grad():
            recomputed = response_outputs(shared, first, temperature=0.7)["logprobs"]
    assert torch.equal(first.response, again.response) and not torch.equal(
        first.response, other.response
    )
    # KV-cached decoding of left-padded prompts and one full forward agree on every token
    torch.testing.assert_close(recomputed, first.sampled_logprobs, atol=1e-4, rtol=1e-4)
