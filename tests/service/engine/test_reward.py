"""Reward scoring on the served base equals peft's sequence classifier with that adapter."""

from __future__ import annotations

import asyncio

import pytest
import torch
from peft import PeftModel
from transformers import LlamaForSequenceClassification

from core.base.checkpoint import load_tokenizer
from core.errors import InvalidRequest
from core.reward_format import reward_input_ids
from service.engine import SamplingParams
from tests.service.engine.engine_calls import prompt, run


@torch.no_grad()
def _peft_scores(tiny_llama_dir, folder, sequences: list[list[int]]) -> list[float]:
    model = LlamaForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=1)
    model.config.pad_token_id = 3
    model = PeftModel.from_pretrained(model, folder).eval()
    return [model(input_ids=torch.tensor([ids])).logits[0, 0].item() for ids in sequences]


def test_scores_equal_peft_sequence_classifier_while_generation_runs(
    make_engine, adapter_dirs, tiny_llama_dir
):
    engine = make_engine(prefill_chunk_tokens=24)  # several scoring chunks
    sequences = [prompt(200 + i, 3 + 4 * i) for i in range(6)]

    async def main():
        generating = asyncio.create_task(
            engine.complete(
                prompt(1, 5), "alpha", SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
            )
        )
        scores = await engine.score_ids("judge", sequences)
        await generating
        return scores

    scores = run(main())
    expected = _peft_scores(tiny_llama_dir, adapter_dirs["judge"], sequences)
    assert scores == pytest.approx(expected, abs=1e-4)
    assert len({round(s, 4) for s in scores}) > 1


def test_score_text_pairs_and_refuse_a_policy_as_judge(
    make_engine, settings, adapter_dirs, tiny_llama_dir
):
    engine = make_engine()
    completions = ["The cat sat on the mat.", "Dogs bark at night.", ""]
    scores = run(engine.score("judge@production", "Q: what happened? A: ", completions))
    tokenizer = load_tokenizer(settings)
    sequences = [reward_input_ids(tokenizer, "Q: what happened? A: ", c) for c in completions]
    assert scores == pytest.approx(
        _peft_scores(tiny_llama_dir, adapter_dirs["judge"], sequences), abs=1e-4
    )
    with pytest.raises(InvalidRequest, match="policy adapter"):
        run(engine.score("alpha", "x", ["y"]))
    assert all(s.in_use == 0 for s in engine.residency())


def test_scoring_counts_against_the_queue_bound_and_is_refused_once_closed(make_engine):
    from core.errors import Overloaded
    from service.engine import EngineClosed

    engine = make_engine(max_batch_size=1, max_queue=1)
    long = SamplingParams(max_tokens=400, temperature=0, ignore_eos=True)

    async def main():
        running = await engine.submit(prompt(1, 5), None, long)
        await running.__anext__()  # admitted: it holds the only row
        waiting = await engine.submit(prompt(2, 5), None, long)  # the queue is now full
        with pytest.raises(Overloaded):
            await engine.score_ids("judge", [prompt(3, 5)])
        for stream in (waiting, running):
            await stream.aclose()
        assert await engine.score_ids("judge", [prompt(3, 5)])  # room again
        await asyncio.get_running_loop().run_in_executor(None, engine.close)
        with pytest.raises(EngineClosed):
            await engine.score_ids("judge", [prompt(3, 5)])

    run(main())
    assert all(s.in_use == 0 for s in engine.residency()), engine.residency()
