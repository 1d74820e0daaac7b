"""OpenAI's prompt forms, echo with prompt log-probabilities (vLLM's shape, as evaluation tools
read it), penalties, and refusal by name of what is not supported; through the openai package
where it applies, checked against plain transformers and peft on the tiny model."""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from peft import PeftModel
from transformers import LlamaForCausalLM

from core.base.checkpoint import load_tokenizer
from core.base.folders import base_model_info
from core.registry import open_registry
from service.engine import SamplingParams
from tests.api_keys import FEEDBACK_KEY, auth
from tests.http_errors import assert_error
from tests.service.engine.reference import reference_greedy


@pytest.fixture(scope="module")
def tokenizer(server_settings):
    return load_tokenizer(server_settings)


@pytest.fixture(scope="module")
def reference(server_settings):
    """``reference(model) -> transformers model``: the base, or the base with the adapter as
    peft loads it from the registry."""
    models = {}

    def load(model: str):
        if model not in models:
            base = LlamaForCausalLM.from_pretrained(server_settings.base_model).eval()
            if model != "base":
                registry = open_registry(server_settings, base_model_info(server_settings))
                with registry.checkout(model, registry.resolve(model).version) as folder:
                    base = PeftModel.from_pretrained(base, folder).eval()
            models[model] = base
        return models[model]

    return load


def greedy(**kwargs) -> dict:
    return {"max_tokens": 6, "temperature": 0, **kwargs}


def test_every_prompt_form_gets_its_choices_in_order(oai, tokenizer):
    texts = ["The weather is", "Once upon a time there", "Hi"]
    alone = [oai.completions.create(model="support", prompt=t, **greedy()) for t in texts]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    for prompt in (texts, ids):  # a list of strings, a list of token-id lists
        result = oai.completions.create(model="support", prompt=prompt, **greedy())
        assert [c.index for c in result.choices] == [0, 1, 2]
        assert [c.text for c in result.choices] == [a.choices[0].text for a in alone]
        assert result.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
        assert result.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)
    single_ids = oai.completions.create(model="support", prompt=ids[1], **greedy())  # token ids
    assert single_ids.choices[0].text == alone[1].choices[0].text
    assert [c.index for c in single_ids.choices] == [0]


def test_several_prompts_stream_with_their_choice_index(oai):
    prompts = ["The weather is", "Thank you for"]
    whole = oai.completions.create(model="summarize", prompt=prompts, echo=True, **greedy(max_tokens=8))
    chunks = list(oai.completions.create(model="summarize", prompt=prompts, echo=True, stream=True,
                                         stream_options={"include_usage": True}, **greedy(max_tokens=8)))
    texts = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        texts[choice.index] += choice.text
    assert [texts[0], texts[1]] == [c.text for c in whole.choices]
    assert texts[0].startswith(prompts[0]) and texts[1].startswith(prompts[1])
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_several_prompts_with_n_number_choices_as_vllm_and_log_each(client, base_url, tokenizer):
    prompts = ["Summarize: the cat sat on the mat.", "Summarize: rain is expected all week."]
    n = 2
    body = {"model": "summarize", "prompt": prompts, "n": n, "echo": True, "logprobs": 1,
            "max_tokens": 6, "temperature": 1.0, "seed": 9}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    whole = r.json()
    choices = whole["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]  # prompt p's choice j is p * n + j
    for c in choices:
        prompt = prompts[c["index"] // n]
        assert c["text"].startswith(prompt)
        prompt_length = len(tokenizer(prompt)["input_ids"])
        first_of_prompt = choices[c["index"] // n * n]["logprobs"]
        # every choice echoes its prompt's log-probabilities, computed once by the shared prefill
        assert c["logprobs"]["token_logprobs"][:prompt_length] == first_of_prompt["token_logprobs"][:prompt_length]
    for p, prompt in enumerate(prompts):  # choice 0 of each prompt: what the seed gives alone
        alone = client.post("/v1/completions", json=body | {"prompt": prompt, "n": 1}).json()
        assert choices[p * n]["text"] == alone["choices"][0]["text"]
    assert whole["usage"]["prompt_tokens"] == sum(len(tokenizer(t)["input_ids"]) for t in prompts)
    assert whole["usage"]["completion_tokens"] == 4 * 6
    ids = whole["completion_ids"]
    assert len(set(ids)) == 4 and ids[0] == whole["completion_id"]
    assert [c["completion_id"] for c in choices] == ids

    # each choice is logged on its own, under its id: a pair of prompt 1's choices
    with httpx.Client(base_url=base_url, headers=auth(FEEDBACK_KEY), timeout=60) as labeler:
        r = labeler.post("/v1/feedback", json={"use_case": "summarize", "completion_ids": ids[2:], "choice": 0})
    assert r.status_code == 201, r.text
    assert r.json()["prompt"] == prompts[1]
    assert r.json()["candidates"] == [c["text"][len(prompts[1]):] for c in choices[2:]]

    with client.stream("POST", "/v1/completions", json=body | {"stream": True, "stream_options": {"include_usage": True}}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    texts, streamed_ids = [""] * 4, [None] * 4
    for chunk in events[:-1]:
        (choice,) = chunk["choices"]
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"]:
            streamed_ids[choice["index"]] = chunk["completion_id"]
    assert texts == [c["text"] for c in choices]  # seeded: the same four choices
    assert len(set(streamed_ids)) == 4 and None not in streamed_ids
    assert events[-1]["usage"] == whole["usage"]


@pytest.mark.parametrize("model", ["base", "summarize"])
@pytest.mark.parametrize("max_tokens", [0, 1])
def test_echo_returns_prompt_logprobs_equal_to_a_plain_forward_pass(oai, tokenizer, reference, model, max_tokens):
    # What lm-evaluation-harness's local-completions sends to score a continuation.
    context, continuation = tokenizer("The capital of France")["input_ids"], [389, 257, 1010, 42]
    ids = context + continuation
    result = oai.completions.create(model=model, prompt=[ids], echo=True, logprobs=2,
                                    max_tokens=max_tokens, temperature=0, seed=1)
    with torch.no_grad():
        logp = torch.log_softmax(reference(model)(input_ids=torch.tensor([ids])).logits[0], -1)
    (choice,) = result.choices
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids) + max_tokens
    assert lp.tokens[: len(ids)] == [tokenizer.decode([t]) for t in ids]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing precedes it
    expected = [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert lp.token_logprobs[1 : len(ids)] == pytest.approx(expected, abs=1e-4)
    for i in range(1, len(ids)):  # the top 2 and the prompt token itself
        values, top_ids = logp[i - 1].topk(2)
        want = {tokenizer.decode([t]): v for t, v in zip(top_ids.tolist(), values.tolist(), strict=True)}
        want[tokenizer.decode([ids[i]])] = expected[i - 1]
        assert lp.top_logprobs[i] == pytest.approx(want, abs=1e-4)
    # offsets index the echoed text (where BOS takes no room), the generated token's included
    for token_id, offset in zip(ids, lp.text_offset, strict=False):
        assert choice.text[offset:].startswith(tokenizer.decode([token_id], skip_special_tokens=True))
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[-1] <= len(choice.text)
    log_likelihood = sum(lp.token_logprobs[len(context) : len(ids)])
    assert log_likelihood == pytest.approx(sum(expected[len(context) - 1 :]), abs=1e-3)
    assert choice.text.startswith(tokenizer.decode(ids, skip_special_tokens=True)) and choice.finish_reason == "length"
    assert result.usage.prompt_tokens == len(ids) and result.usage.completion_tokens == max_tokens
    if max_tokens:  # the generated token follows, greedy: the most likely after the prompt
        assert lp.token_logprobs[-1] == pytest.approx(logp[-1].max().item(), abs=1e-4)
    else:
        assert choice.text == tokenizer.decode(ids, skip_special_tokens=True)


def test_max_tokens_zero_without_echo_is_refused(client):
    r = client.post("/v1/completions", json={"model": "base", "prompt": "x", "max_tokens": 0})
    assert_error(r, 400, "invalid_request_error", param="max_tokens", contains="echo")


def test_penalties_change_greedy_output_as_the_formula_predicts(oai, tokenizer, reference):
    ids = tokenizer("Once upon a time")["input_ids"]
    for fields in (
        {"presence_penalty": 1.5},
        {"frequency_penalty": 2.0, "repetition_penalty": 1.3},
        {"logit_bias": {"300": 6, "301": -100}},
    ):
        bias = {int(t): b for t, b in fields.get("logit_bias", {}).items()}
        params = SamplingParams(max_tokens=20, temperature=0, **(fields | {"logit_bias": bias}))
        expected = reference_greedy(reference("base"), ids, params, {tokenizer.eos_token_id})
        body = {k: v for k, v in fields.items() if k in ("presence_penalty", "frequency_penalty", "logit_bias")}
        extra = {k: v for k, v in fields.items() if k not in body}  # vLLM's extensions
        result = oai.completions.create(model="base", prompt=ids, max_tokens=20, temperature=0, logprobs=0,
                                        extra_body=extra, **body)
        assert result.choices[0].logprobs.tokens == [tokenizer.decode([t]) for t in expected], fields
        plain = oai.completions.create(model="base", prompt=ids, max_tokens=20, temperature=0)
        assert result.choices[0].text != plain.choices[0].text


def test_chat_takes_logit_bias_and_min_tokens(oai, tokenizer):
    messages = [{"role": "user", "content": "Hello"}]
    eos = str(tokenizer.eos_token_id)
    forced = oai.chat.completions.create(model="support", messages=messages, max_tokens=5, temperature=0,
                                         logit_bias={"300": 100})
    assert forced.choices[0].message.content == tokenizer.decode([300] * 5)
    ended = oai.chat.completions.create(model="support", messages=messages, max_tokens=9, temperature=0,
                                        logit_bias={eos: 100}, extra_body={"min_tokens": 3})
    assert ended.usage.completion_tokens == 4 and ended.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/completions", {"suffix": "end"}, "suffix"),
        ("/v1/completions", {"prompt_logprobs": 1}, "prompt_logprobs"),
        ("/v1/completions", {"stop_token_ids": [2]}, "stop_token_ids"),
        ("/v1/completions", {"stream_options": {"continuous_usage_stats": True}}, "stream_options.continuous_usage_stats"),
        ("/v1/completions", {"logit_bias": {"5": 101}}, "logit_bias.5"),
        ("/v1/completions", {"logit_bias": {"9999999": 1}}, "logit_bias"),
        ("/v1/completions", {"min_tokens": 17}, "min_tokens"),
        ("/v1/completions", {"repetition_penalty": 0}, "repetition_penalty"),
        ("/v1/completions", {"prompt": [1, -2]}, "prompt"),
        ("/v1/completions", {"prompt": [[1], []]}, "prompt"),
        ("/v1/chat/completions", {"tools": []}, "tools"),
        ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, "response_format"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages.0.name"),
        ("/v1/chat/completions", {"frequency_penalty": -2.5}, "frequency_penalty"),
    ],
)
def test_unsupported_or_invalid_fields_are_refused_by_name(client, path, body, param):
    base = {"model": "base", "prompt": "x"} if path == "/v1/completions" else {
        "model": "base", "messages": [{"role": "user", "content": "x"}]}
    assert_error(client.post(path, json=base | body), 400, "invalid_request_error", param=param)
