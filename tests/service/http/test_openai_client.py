"""The official openai package against a running server: completions, chat, streaming, models,
and errors mapped to the package's typed exceptions."""

from __future__ import annotations

import openai
import pytest

from tests.api_keys import ADMIN_KEY


def test_completion_selects_an_adapter_and_names_the_version(oai):
    base = oai.completions.create(model="base", prompt="The weather is", max_tokens=12, temperature=0)
    tuned = oai.completions.create(model="summarize", prompt="The weather is", max_tokens=12, temperature=0)
    pinned = oai.completions.create(model="summarize@1", prompt="The weather is", max_tokens=12, temperature=0)
    assert base.model in ("base", "tiny-llama")
    assert tuned.model == "summarize@1" and pinned.model == "summarize@1"
    assert tuned.choices[0].text == pinned.choices[0].text
    assert tuned.choices[0].text != base.choices[0].text  # the adapter changes the output
    assert tuned.usage.completion_tokens == 12 and tuned.choices[0].finish_reason == "length"
    assert tuned.usage.total_tokens == tuned.usage.prompt_tokens + 12


def test_streamed_completion_matches_the_whole_one(oai):
    whole = oai.completions.create(model="support", prompt="Thank you for", max_tokens=10, temperature=0)
    stream = oai.completions.create(model="support", prompt="Thank you for", max_tokens=10, temperature=0,
                                    stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 10


def test_chat_uses_the_chat_template_and_streams(oai):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    whole = oai.chat.completions.create(model="summarize@production", messages=messages, max_tokens=8, temperature=0)
    assert whole.choices[0].message.role == "assistant"
    assert whole.model == "summarize@1"
    deltas = list(oai.chat.completions.create(model="summarize@production", messages=messages,
                                              max_tokens=8, temperature=0, stream=True))
    assert deltas[0].choices[0].delta.role == "assistant"
    assert "".join(d.choices[0].delta.content or "" for d in deltas) == whole.choices[0].message.content


def test_tokens_that_add_no_text_send_no_empty_chunks(oai):
    # BOS (id 1) decodes to no text: forced for every token, the stream opens with the role,
    # ends with the finish reason and sends nothing between, while usage counts every token.
    kwargs = dict(model="base", messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
                  temperature=0, logit_bias={"1": 100}, extra_body={"ignore_eos": True})
    whole = oai.chat.completions.create(**kwargs)
    assert whole.choices[0].message.content == "" and whole.usage.completion_tokens == 5
    chunks = list(oai.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    choices = [c.choices[0] for c in chunks if c.choices]
    assert [(c.delta.role, c.delta.content, c.finish_reason) for c in choices] == [
        ("assistant", "", None), (None, "", "length"),
    ]
    assert chunks[-1].usage.completion_tokens == 5
    # asked for log-probabilities, every token has its chunk
    with_logprobs = list(oai.chat.completions.create(**kwargs, stream=True, logprobs=True))
    assert len([c for c in with_logprobs if c.choices]) == 1 + 5


def test_seeded_sampling_is_reproducible(oai):
    kwargs = dict(model="summarize", prompt="Once upon a time", max_tokens=16, temperature=1.0, seed=7)
    assert oai.completions.create(**kwargs).choices[0].text == oai.completions.create(**kwargs).choices[0].text


def test_logprobs(oai):
    result = oai.completions.create(model="base", prompt="Hello", max_tokens=5, temperature=0, logprobs=2)
    logprobs = result.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == 5
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    assert all(len(top) == 2 for top in logprobs.top_logprobs)
    chat = oai.chat.completions.create(model="base", messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=3, temperature=0, logprobs=True, top_logprobs=1)
    assert len(chat.choices[0].logprobs.content) == 3


def test_stop_sequences_end_the_text(oai):
    free = oai.completions.create(model="base", prompt="Hello", max_tokens=20, temperature=0).choices[0].text
    stop = free[3:6]
    assert stop.strip(), free
    stopped = oai.completions.create(model="base", prompt="Hello", max_tokens=20, temperature=0, stop=[stop])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == free[: free.index(stop)]


def test_models_lists_base_and_adapters(oai):
    ids = {m.id for m in oai.models.list()}
    assert {"base", "summarize", "summarize@production", "support"} <= ids
    assert "judge" not in ids  # reward adapters do not generate


def test_errors_arrive_as_typed_openai_exceptions(oai, base_url):
    with pytest.raises(openai.NotFoundError, match="'nope' does not exist"):
        oai.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        oai.completions.create(model="base", prompt="x", temperature=3)
    with pytest.raises(openai.BadRequestError, match="n"):
        oai.completions.create(model="base", prompt="x", n=1000)  # beyond max_n
    with pytest.raises(openai.BadRequestError, match="reward"):
        oai.completions.create(model="judge", prompt="x", max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong-key-0123456789", max_retries=0).models.list()
    admin = openai.OpenAI(base_url=f"{base_url}/v1", api_key=ADMIN_KEY, max_retries=0)
    assert admin.models.list().data  # admin holds every scope


def test_n_choices_each_have_an_index_and_a_logged_completion_id(oai):
    kwargs = dict(model="summarize", prompt="Once upon a time", max_tokens=8, temperature=1.0, seed=11, n=3)
    whole = oai.completions.create(**kwargs)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    assert len({c.text for c in whole.choices}) > 1  # three samples, not one copied
    ids = whole.model_extra["completion_ids"]
    assert len(set(ids)) == 3 and ids[0] == whole.model_extra["completion_id"]
    assert whole.usage.completion_tokens == 24 and whole.usage.prompt_tokens < 24

    chunks = list(oai.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    texts, streamed_ids = ["", "", ""], {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                streamed_ids[choice.index] = chunk.model_extra["completion_id"]
    assert texts == [c.text for c in whole.choices]  # seeded: the same three choices
    assert sorted(streamed_ids) == [0, 1, 2] and len(set(streamed_ids.values())) == 3
    assert chunks[-1].usage.completion_tokens == 24


def test_chat_streams_n_choices_each_opened_with_the_role(oai):
    messages = [{"role": "user", "content": "Hello"}]
    kwargs = dict(model="support", messages=messages, max_tokens=6, temperature=0.9, seed=5, n=2)
    whole = oai.chat.completions.create(**kwargs)
    assert [c.index for c in whole.choices] == [0, 1]
    assert len(whole.model_extra["completion_ids"]) == 2
    contents, roles = ["", ""], [None, None]
    for chunk in oai.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            roles[choice.index] = roles[choice.index] or choice.delta.role
            contents[choice.index] += choice.delta.content or ""
    assert roles == ["assistant", "assistant"]
    assert contents == [c.message.content for c in whole.choices]
