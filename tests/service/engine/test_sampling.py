"""Pure sampling and text functions: top-k, top-p, token choice, stop strings, detokenizing."""

from __future__ import annotations

import torch

from core.base.checkpoint import load_tokenizer
from service.engine.sampling import SamplingParams, choose_tokens, draw, mask_top_k, mask_top_p
from service.engine.text import IncrementalDecoder, StopMatcher

INF = float("-inf")


def test_top_k_keeps_the_k_largest_per_row_and_zero_keeps_all():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [1.0, 4.0, 3.0, 2.0]])
    out = mask_top_k(logits, torch.tensor([2, 0]))
    assert out[0].tolist() == [INF, 4.0, 3.0, INF]
    assert out[1].tolist() == logits[1].tolist()


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = mask_top_p(probs.log(), torch.tensor([0.7]))
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False]
    out = mask_top_p(probs.log(), torch.tensor([0.1]))  # the top token always stays
    assert torch.isfinite(out[0]).tolist() == [True, False, False, False]


def test_choose_tokens_mixes_greedy_and_seeded_rows():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    params = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.0, seed=7),
        SamplingParams(temperature=1.0, top_k=1),
    ]
    generators = [p.generator(torch.device("cpu")) for p in params]
    first = choose_tokens(logits, params, generators)
    again = choose_tokens(logits, params, [p.generator(torch.device("cpu")) for p in params])
    assert first[0] == logits[0].argmax() and first[2] == logits[2].argmax()
    assert first.tolist() == again.tolist()  # same seed, same draw


def test_draw_follows_the_distribution_and_never_draws_a_zero_probability_token():
    probs = torch.tensor([0.5, 0.0, 0.3, 0.0, 0.2], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([draw(probs, generator) for _ in range(20_000)])
    counts = torch.bincount(draws, minlength=5)
    assert counts[1] == 0 and counts[3] == 0
    # 4 standard deviations of a frequency over 20,000 draws at p = 0.5 is 0.014
    assert torch.allclose(counts.double() / 20_000, probs, atol=0.015), counts
    # the last token with any probability is reachable, and nothing after it
    tail = torch.tensor([0.0, 0.999999, 1e-6, 0.0], dtype=torch.float64)
    assert {int(draw(tail, generator)) for _ in range(2_000)} <= {1, 2}


def test_stop_matcher_holds_back_possible_prefixes_and_cuts_at_the_stop():
    matcher = StopMatcher(("END", "\n\n"))
    assert matcher.push("hello E") == ("hello ", False)  # "E" may start "END"
    assert matcher.push("N") == ("", False)
    assert matcher.push("Dgame") == ("", True)  # "END" reached: nothing after it
    matcher = StopMatcher(("END",))
    assert matcher.push("EN") == ("", False)
    assert matcher.push("ough") == ("ENough", False)
    assert matcher.push("E") == ("", False)
    assert matcher.flush() == "E"


def test_incremental_decoder_streams_the_same_text_as_decoding_everything(settings):
    tokenizer = load_tokenizer(settings)
    text = "Grüße, naïve café — 東京 🙂 done."
    ids = tokenizer(text)["input_ids"]
    prompt, generated = ids[:3], ids[3:]
    decoder = IncrementalDecoder(tokenizer, prompt)
    streamed = "".join(decoder.push(t) for t in generated)
    assert streamed == tokenizer.decode(generated, skip_special_tokens=True)
    assert "\ufffd" not in streamed


def test_values_valid_by_the_schema_but_unsampleable_choose_a_token():
    logits = torch.randn(3, 50)
    params = [
        SamplingParams(temperature=2.2250738585072014e-308, seed=1),  # greedy, as in vLLM
        SamplingParams(temperature=1.0, top_p=5e-324, seed=2),  # 0 in float32: keeps the top token
        SamplingParams(temperature=1.0, top_k=2**63, seed=3),  # beyond the vocabulary: all tokens
    ]
    tokens = choose_tokens(logits, params, [p.generator(torch.device("cpu")) for p in params])
    assert params[0].greedy
    assert tokens[0] == logits[0].argmax() and tokens[1] == logits[1].argmax()
    assert 0 <= tokens[2] < 50


def test_a_seed_outside_64_bits_is_refused_naming_seed():
    import pytest

    from core.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as refused:
        SamplingParams(seed=2**64 + 1)
    assert refused.value.param == "seed"
    SamplingParams(seed=2**63 - 1).generator(torch.device("cpu"))  # the largest one works
