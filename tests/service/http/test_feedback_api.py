"""The feedback API through a real server: records tied to logged completions, idempotency,
imports, exports, snapshots and stats."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import httpx
import pytest

from tests.api_keys import INFER_KEY, auth
from tests.http_errors import assert_error


def complete(client, model: str, prompt: str, seed: int) -> dict:
    r = client.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 6, "seed": seed})
    assert r.status_code == 200, r.text
    return r.json()


def test_feedback_on_logged_completions_counts_per_version(client, labeler):
    prompt = "Summarize: the cat sat on the mat."
    first = complete(client, "summarize", prompt, seed=1)
    second = complete(client, "base", prompt, seed=2)
    assert first["completion_id"].startswith("cmpl-")
    r = labeler.post("/v1/feedback", json={
        "use_case": "summarize", "completion_ids": [first["completion_id"], second["completion_id"]],
        "choice": 0, "metadata": {"ui": "side-by-side"},
    })
    assert r.status_code == 201, r.text
    record = r.json()
    assert record["prompt"] == prompt
    assert record["candidates"][0] == first["choices"][0]["text"]
    assert record["labeler"] == "labelers"  # the key's name, when the body names no labeler
    stats = labeler.get("/v1/feedback/stats", params={"use_case": "summarize", "a": "summarize@1", "b": "base"}).json()
    assert stats["head_to_head"]["wins"] >= 1 and stats["head_to_head"]["win_rate"] is not None
    assert any(v["version"] == "summarize@1" and v["wins"] >= 1 for v in stats["versions"])
    # "version" was first called "model": old clients still find it there
    assert {v["version"] for v in stats["versions"]} == {v["model"] for v in stats["versions"]} >= {"base"}


def test_feedback_on_a_pair_of_choices_from_one_call(client, labeler):
    prompt = "Summarize: rain is expected all week."
    r = client.post("/v1/completions", json={"model": "summarize", "prompt": prompt, "max_tokens": 8,
                                             "temperature": 1.0, "seed": 4, "n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    r = labeler.post("/v1/feedback", json={"use_case": "summarize", "completion_ids": body["completion_ids"], "choice": 1})
    assert r.status_code == 201, r.text
    record = r.json()
    assert record["prompt"] == prompt
    assert record["candidates"] == [c["text"] for c in body["choices"]]


def test_an_idempotency_key_makes_a_retry_count_once(labeler):
    body = {"use_case": "support", "prompt": "Where is my order?", "candidates": ["It ships today.", "Dunno."], "choice": 0}
    first = labeler.post("/v1/feedback", json=body, headers={"Idempotency-Key": "retry-1"})
    again = labeler.post("/v1/feedback", json=body, headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == 201 and again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    changed = labeler.post("/v1/feedback", json={**body, "choice": 1}, headers={"Idempotency-Key": "retry-1"})
    assert_error(changed, 409, "conflict_error")
    stats = labeler.get("/v1/feedback/stats", params={"use_case": "support"}).json()
    assert stats["use_cases"][0]["feedback"] == 1


@pytest.mark.parametrize("body, param", [
    ({"use_case": "summarize", "completion_ids": ["cmpl-missing", "cmpl-absent"], "choice": 0}, "completion_ids"),
    ({"use_case": "summarize", "prompt": "p", "candidates": ["same", "same"], "choice": 0}, "candidates"),
    ({"use_case": "summarize", "prompt": "p", "candidates": ["", "b"], "choice": 0}, "candidates"),
    ({"use_case": "summarize", "prompt": "p", "candidates": ["a" * 40000, "b"], "choice": 0}, "candidates"),
    ({"use_case": "summarize", "prompt": "p", "candidates": ["a", "b", "c"], "choice": 0}, "candidates"),
    ({"use_case": "Not A Name", "prompt": "p", "candidates": ["a", "b"], "choice": 0}, "use_case"),
    ({"use_case": "summarize", "prompt": "p", "candidates": ["a", "b"], "choice": 2}, "choice"),
    ({"use_case": "summarize", "prompt": "p", "choice": 0}, "candidates"),
])
def test_bad_feedback_is_a_4xx_naming_the_field(labeler, body, param):
    r = labeler.post("/v1/feedback", json=body)
    assert r.status_code == 400, r.text
    assert param in (r.json()["error"]["param"] or "")


def test_feedback_needs_the_feedback_scope(base_url):
    with httpx.Client(base_url=base_url, headers=auth(INFER_KEY)) as c:
        r = c.post("/v1/feedback", json={"use_case": "x", "prompt": "p", "candidates": ["a", "b"], "choice": 0})
        assert_error(r, 403, "permission_error")


def test_import_real_hh_rlhf_pairs_then_export_and_snapshot(labeler, hh_rlhf: Path):
    r = labeler.post("/v1/feedback/import", params={"use_case": "harmless"},
                     files={"file": ("test.jsonl.gz", hh_rlhf.read_bytes())})
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["format"], report["accepted"], report["rejected_count"]) == ("trl", 2312, 0)
    exported = labeler.get("/v1/feedback/export", params={"use_case": "harmless", "format": "trl"})
    rows = [json.loads(line) for line in exported.text.splitlines()]
    assert len(rows) == 2312 and set(rows[0]) == {"prompt", "chosen", "rejected"}
    original = json.loads(gzip.decompress(hh_rlhf.read_bytes()).splitlines()[0])
    assert rows[0]["prompt"] + rows[0]["chosen"] == original["chosen"]
    snapshot = labeler.post("/v1/feedback/snapshots", json={"use_case": "harmless"}).json()
    assert snapshot["row_count"] == 2312 and len(snapshot["sha256"]) == 64
    assert labeler.get(f"/v1/feedback/snapshots/{snapshot['id']}").json() == snapshot


def test_import_reports_bad_lines_with_numbers(labeler):
    lines = [
        {"input_text": "q1", "candidate_0": "a", "candidate_1": "b", "choice": 0},
        {"input_text": "q2", "candidate_0": "a", "candidate_1": "a", "choice": 1},
        "not json at all",
        {"input_text": "q4", "candidate_0": "a", "candidate_1": "b", "choice": 1},
    ]
    body = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    r = labeler.post("/v1/feedback/import", params={"use_case": "vertex-demo", "format": "vertex"},
                     files={"file": ("rows.jsonl", io.BytesIO(body.encode()))})
    report = r.json()
    assert report["accepted"] == 2 and report["rejected_count"] == 2
    assert [row["line"] for row in report["rejected"]] == [2, 3]
    exported = labeler.get("/v1/feedback/export", params={"use_case": "vertex-demo"}).text.splitlines()
    assert [json.loads(x)["input_text"] for x in exported] == ["q1", "q4"]
