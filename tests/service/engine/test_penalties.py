"""Penalties, logit bias and min_tokens change greedy decoding exactly as their formulas say;
prompt log-probabilities equal a plain forward pass. References use plain transformers."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import LlamaForCausalLM

from core.errors import InvalidRequest
from service.engine import SamplingParams
from service.engine.sampling import process_logits
from tests.service.engine.engine_calls import prompt, run
from tests.service.engine.reference import reference_greedy


@pytest.fixture(scope="module")
def base_model(tiny_llama_dir) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()


def test_penalties_change_greedy_output_exactly_as_the_formula_predicts(make_engine, base_model):
    engine = make_engine()
    eos = engine.scheduler.eos_ids
    ids = prompt(3, 7)
    plain = SamplingParams(max_tokens=24, temperature=0)
    cases = [
        plain,
        SamplingParams(max_tokens=24, temperature=0, presence_penalty=2.0),
        SamplingParams(max_tokens=24, temperature=0, frequency_penalty=1.5),
        SamplingParams(max_tokens=24, temperature=0, repetition_penalty=1.8),
        SamplingParams(max_tokens=24, temperature=0, repetition_penalty=0.5, presence_penalty=-1.0),
        SamplingParams(max_tokens=24, temperature=0, logit_bias={ids[3]: 7.5, 17: -100}),
    ]

    async def main():
        return await asyncio.gather(*[engine.complete(ids, None, p) for p in cases])

    outputs = [c.token_ids for c in run(main(), timeout=120)]  # one mixed batch: penalised rows beside a plain one
    for params, tokens in zip(cases, outputs, strict=True):
        assert tokens == reference_greedy(base_model, ids, params, eos), params
    assert all(tokens != outputs[0] for tokens in outputs[1:])  # each penalty changed the output


def test_repetition_penalty_counts_prompt_tokens_and_presence_only_generated_ones():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    prompt_ids, output = [[0]], [[1, 1, 2]]
    rep = process_logits(logits, [SamplingParams(repetition_penalty=2.0)], prompt_ids, output, set())
    assert rep.tolist() == [[1.0, -2.0, 0.25, 3.0]]  # 0 (prompt), 1 and 2 (output) penalised
    pres = process_logits(logits, [SamplingParams(presence_penalty=1.0, frequency_penalty=0.5)],
                          prompt_ids, output, set())
    assert pres.tolist() == [[2.0, -1.0 - 1.0 - 1.0, 0.5 - 1.0 - 0.5, 3.0]]
    untouched = process_logits(logits, [SamplingParams()], prompt_ids, output, set())
    assert untouched is logits  # rows without penalties cost nothing


def test_min_tokens_holds_back_eos_and_stop_strings(make_engine):
    engine = make_engine()
    (eos,) = engine.scheduler.eos_ids
    ids = prompt(4, 5)
    eager = SamplingParams(max_tokens=10, temperature=0, logit_bias={eos: 100})
    held = SamplingParams(max_tokens=10, temperature=0, logit_bias={eos: 100}, min_tokens=4)
    assert run(engine.complete(ids, None, eager), timeout=120).token_ids == [eos]
    late = run(engine.complete(ids, None, held), timeout=120)
    assert len(late.token_ids) == 5 and late.token_ids[-1] == eos and eos not in late.token_ids[:4]
    assert late.finish_reason == "stop"

    free = run(engine.complete(ids, None, SamplingParams(max_tokens=6, temperature=0)), timeout=120)
    stop = free.text[:2]
    assert stop.strip(), free.text
    stopped = run(engine.complete(ids, None, SamplingParams(max_tokens=6, temperature=0, stop=[stop])), timeout=120)
    assert stopped.finish_reason == "stop" and stopped.text == ""
    kept = run(engine.complete(ids, None, SamplingParams(max_tokens=6, temperature=0, stop=[stop], min_tokens=6)), timeout=120)
    assert kept.usage.completion_tokens == 6 and kept.finish_reason == "length"


def test_prompt_logprobs_equal_log_softmax_of_a_plain_forward_pass(make_engine, base_model, adapter_dirs):
    from peft import PeftModel

    # A small chunk: the prompts span several prefill steps; different lengths: left padding.
    engine = make_engine(prefill_chunk_tokens=16)
    prompts = {"short": prompt(5, 6), "long": prompt(6, 29), "adapter": prompt(7, 13)}
    params = SamplingParams(max_tokens=2, temperature=0, logprobs=0, prompt_logprobs=3)

    async def main():
        return await asyncio.gather(
            *[
                anext(aiter(engine.generate(ids, "alpha" if name == "adapter" else None, params)))
                for name, ids in prompts.items()
            ]
        )

    firsts = run(main(), timeout=120)
    tuned = PeftModel.from_pretrained(
        LlamaForCausalLM.from_pretrained(engine.settings.base_model), adapter_dirs["alpha"]
    ).eval()
    for (name, ids), event in zip(prompts.items(), firsts, strict=True):
        model = tuned if name == "adapter" else base_model
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
        assert event.prompt_logprobs is not None and len(event.prompt_logprobs) == len(ids) - 1
        for position, entry in enumerate(event.prompt_logprobs, start=1):
            expected = logp[position - 1]
            assert entry.logprob == pytest.approx(expected[ids[position]].item(), abs=1e-4), name
            values, top_ids = expected.topk(3)
            assert list(entry.top) == top_ids.tolist()
            assert list(entry.top.values()) == pytest.approx(values.tolist(), abs=1e-4)


def test_n_choices_of_each_prompt_share_its_prompt_logprobs_from_the_chunked_prefill(make_engine, base_model):
    engine = make_engine(prefill_chunk_tokens=16)  # 2 prompts x 2 choices over several chunks
    prompts = [prompt(8, 21), prompt(9, 9)]
    params = SamplingParams(max_tokens=3, temperature=1.0, seed=3, prompt_logprobs=0)

    async def firsts(ids):
        firsts = {}
        async for event in await engine.submit(ids, None, params, 2):
            firsts.setdefault(event.index, event)
        return firsts

    async def main():
        return await asyncio.gather(*[firsts(ids) for ids in prompts])

    for ids, by_choice in zip(prompts, run(main(), timeout=120), strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(base_model(input_ids=torch.tensor([ids])).logits[0], -1)
        expected = [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
        assert sorted(by_choice) == [0, 1]
        for event in by_choice.values():
            assert event.prompt_logprobs is not None
            assert [e.logprob for e in event.prompt_logprobs] == pytest.approx(expected, abs=1e-4)
            assert all(e.top is None for e in event.prompt_logprobs)  # k = 0: the token's own


def test_bad_penalties_are_refused_naming_the_field(make_engine):
    engine = make_engine()
    with pytest.raises(InvalidRequest) as e:
        SamplingParams(max_tokens=4, min_tokens=5)
    assert e.value.param == "min_tokens"
    with pytest.raises(InvalidRequest) as e:
        SamplingParams(logit_bias={3: 101})
    assert e.value.param == "logit_bias"
    with pytest.raises(InvalidRequest) as e:
        run(engine.complete([1, 2], None, SamplingParams(logit_bias={engine.vocab_size: 1})), timeout=120)
    assert e.value.param == "logit_bias"
