"""best_of on /v1/completions: the n best of best_of candidates, ranked by a reward adapter's
score (each choice carrying it as 'reward') or, without one, by cumulative log-probability;
checked against the same candidates drawn with n and scored through POST /v1/rewards."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import select

from core.store import Store
from core.store.models import CompletionRow
from tests.api_keys import FEEDBACK_KEY, auth
from tests.http_errors import assert_error

PROMPT = "Summarize: the cat sat on the mat."
# Seeded sampling: candidate j of best_of is choice j of the same request with n = best_of.
SAMPLED = {"model": "summarize", "prompt": PROMPT, "max_tokens": 6, "temperature": 1.0, "seed": 11}


def candidates(client, count: int, **extra) -> dict:
    r = client.post("/v1/completions", json=SAMPLED | {"n": count, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_best_of_returns_the_n_highest_rewards_with_their_scores(client, base_url):
    drawn = candidates(client, 5)
    texts = [c["text"] for c in drawn["choices"]]
    r = client.post("/v1/rewards", json={"model": "judge", "prompt": PROMPT, "completions": texts})
    scores = [d["score"] for d in r.json()["data"]]
    assert len(set(texts)) >= 3 and len(set(scores)) >= 3  # a ranking that can go wrong
    best_first = sorted(range(5), key=lambda j: -scores[j])[:2]

    r = client.post("/v1/completions", json=SAMPLED | {"n": 2, "best_of": 5, "reward_model": "judge"})
    assert r.status_code == 200, r.text
    body = r.json()
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    assert [c["text"] for c in choices] == [texts[j] for j in best_first]
    assert [c["reward"] for c in choices] == pytest.approx([scores[j] for j in best_first], rel=1e-4, abs=1e-5)
    # every candidate was generated, so usage counts them all
    assert body["usage"] == drawn["usage"]

    # the two returned choices are logged, each under its own id
    ids = body["completion_ids"]
    assert len(set(ids)) == 2 and ids[0] == body["completion_id"] == choices[0]["completion_id"]
    with httpx.Client(base_url=base_url, headers=auth(FEEDBACK_KEY), timeout=60) as labeler:
        r = labeler.post("/v1/feedback", json={"use_case": "summarize", "completion_ids": ids, "choice": 0})
    assert r.status_code == 201, r.text
    assert r.json()["candidates"] == [c["text"] for c in choices]


def test_reward_model_alone_scores_and_sorts_the_n_choices(client):
    texts = [c["text"] for c in candidates(client, 3)["choices"]]
    scores = [d["score"] for d in client.post(
        "/v1/rewards", json={"model": "judge@1", "prompt": PROMPT, "completions": texts}).json()["data"]]
    body = client.post("/v1/completions", json=SAMPLED | {"n": 3, "reward_model": "judge@1"}).json()
    assert [c["reward"] for c in body["choices"]] == pytest.approx(sorted(scores, reverse=True), rel=1e-4, abs=1e-5)
    assert sorted(c["text"] for c in body["choices"]) == sorted(texts)


def test_only_the_returned_choices_are_logged(client, server_settings, wait_for):
    prompt = f"Summarize: logged once at {time.time()}."
    body = client.post("/v1/completions", json=SAMPLED | {"prompt": prompt, "n": 1, "best_of": 4,
                                                          "reward_model": "judge"}).json()
    with Store.from_settings(server_settings) as store:
        def logged() -> list[CompletionRow]:
            with store.database.read() as session:
                return list(session.scalars(select(CompletionRow).where(CompletionRow.prompt == prompt)))

        wait_for(lambda: bool(logged()))
        time.sleep(0.5)  # a discarded candidate, had it been logged, was queued before the choice
        (row,) = logged()
    assert row.id == body["completion_id"] and row.text == body["choices"][0]["text"]
    assert row.sampling_params["best_of"] == 4 and row.sampling_params["reward_model"] == "judge@1"


def test_best_of_without_a_reward_model_ranks_by_cumulative_logprob(client):
    drawn = candidates(client, 4, logprobs=0)
    totals = [sum(c["logprobs"]["token_logprobs"]) for c in drawn["choices"]]
    assert len(set(totals)) >= 3
    best_first = sorted(range(4), key=lambda j: -totals[j])[:2]
    body = client.post("/v1/completions", json=SAMPLED | {"n": 2, "best_of": 4}).json()
    choices = body["choices"]
    assert [c["text"] for c in choices] == [drawn["choices"][j]["text"] for j in best_first]
    # log-probabilities were not asked for, so none are shown; no reward model, no reward
    assert all(c["logprobs"] is None and c["reward"] is None for c in choices)


def test_several_prompts_each_get_their_n_best(client):
    prompts = [PROMPT, "Summarize: rain is expected all week."]
    body = client.post("/v1/completions", json=SAMPLED | {"prompt": prompts, "n": 2, "best_of": 3,
                                                          "reward_model": "judge"}).json()
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    for p, prompt in enumerate(prompts):
        alone = client.post("/v1/completions", json=SAMPLED | {"prompt": prompt, "n": 2, "best_of": 3,
                                                               "reward_model": "judge"}).json()
        assert [c["text"] for c in choices[2 * p : 2 * p + 2]] == [c["text"] for c in alone["choices"]]
        assert choices[2 * p]["reward"] >= choices[2 * p + 1]["reward"]


@pytest.mark.parametrize(
    "extra, status, type_, param, says",
    [
        ({"reward_model": "nope"}, 404, "not_found_error", None, "reward_model: adapter 'nope' does not exist"),
        ({"reward_model": "support"}, 400, "invalid_request_error", "reward_model", "needs a reward adapter"),
        ({"reward_model": "Not A Name"}, 400, "invalid_request_error", "reward_model", ""),
        ({"n": 3, "best_of": 2}, 400, "invalid_request_error", "best_of", "at least n (3)"),
        ({"best_of": 1000}, 400, "invalid_request_error", "best_of", "at most"),
        ({"best_of": 0}, 400, "invalid_request_error", "best_of", ""),
        ({"n": 1, "best_of": 2, "stream": True}, 400, "invalid_request_error", "stream", "set stream to false"),
        ({"reward_model": "judge", "stream": True}, 400, "invalid_request_error", "stream", "set stream to false"),
    ],
)
def test_bad_best_of_requests_say_what_to_fix(client, extra, status, type_, param, says):
    assert_error(client.post("/v1/completions", json=SAMPLED | extra), status, type_, param=param, contains=says)


def test_best_of_equal_to_n_still_streams(client):
    with client.stream("POST", "/v1/completions", json=SAMPLED | {"n": 2, "best_of": 2, "stream": True}) as r:
        assert r.status_code == 200
        assert any(line.startswith("data: {") for line in r.iter_lines())


CHAT = {"model": "support", "messages": [{"role": "user", "content": "How do I reset my password?"}],
        "max_tokens": 6, "temperature": 1.0, "seed": 5}


def test_chat_best_of_returns_the_n_highest_rewards_of_the_logged_prompt(client, base_url):
    r = client.post("/v1/chat/completions", json=CHAT | {"n": 4})
    texts = [c["message"]["content"] for c in r.json()["choices"]]
    body = client.post("/v1/chat/completions", json=CHAT | {"n": 2, "best_of": 4, "reward_model": "judge"}).json()
    ids = body["completion_ids"]
    assert len(set(ids)) == 2 and body["completion_id"] == ids[0]
    with httpx.Client(base_url=base_url, headers=auth(FEEDBACK_KEY), timeout=60) as labeler:
        logged = labeler.post("/v1/feedback", json={"use_case": "support", "completion_ids": ids, "choice": 1}).json()
    # the reward model reads the prompt as it is logged: the conversation in the chat template
    r = client.post("/v1/rewards", json={"model": "judge", "prompt": logged["prompt"], "completions": texts})
    scores = [d["score"] for d in r.json()["data"]]
    assert len(set(scores)) >= 3
    best_first = sorted(range(4), key=lambda j: -scores[j])[:2]
    choices = body["choices"]
    assert [c["message"]["content"] for c in choices] == [texts[j] for j in best_first]
    assert logged["candidates"] == [texts[j] for j in best_first]
    assert [c["reward"] for c in choices] == pytest.approx([scores[j] for j in best_first], rel=1e-4, abs=1e-5)


def test_chat_refuses_bad_best_of(client):
    assert_error(client.post("/v1/chat/completions", json=CHAT | {"n": 2, "best_of": 1}),
                 400, "invalid_request_error", param="best_of", contains="at least n (2)")
    assert_error(client.post("/v1/chat/completions", json=CHAT | {"best_of": 3, "stream": True}),
                 400, "invalid_request_error", param="stream")
    assert_error(client.post("/v1/chat/completions", json=CHAT | {"reward_model": "summarize@1"}),
                 400, "invalid_request_error", param="reward_model", contains="needs a reward adapter")
