"""The pages' test server's keys (an admin, two labelers, an app) and what the page tests do
on it: sign in like a browser, fill a labeling queue, read the pair a page shows, log a PPO
job's metrics and human votes in its store."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from core.names import AdapterVersion
from core.store import Completion, FeedbackCreate, Store

ADMIN_KEY = "ui-admin-key-0123456789"
ANN_KEY = "ui-ann-key-0123456789"
BOB_KEY = "ui-bob-key-0123456789"
INFER_KEY = "ui-infer-key-0123456789"
API_KEYS = [
    {"name": "ops", "key": ADMIN_KEY, "scopes": ["admin"]},
    {"name": "ann", "key": ANN_KEY, "scopes": ["feedback"]},
    {"name": "bob", "key": BOB_KEY, "scopes": ["feedback"]},
    {"name": "app", "key": INFER_KEY, "scopes": ["infer"]},
]


@contextmanager
def signed_in(url: str, key: str) -> Iterator[httpx.Client]:
    """A browser-like client: signed in through the form, carrying only the session cookie."""
    with httpx.Client(base_url=url, timeout=120) as client:
        r = client.post("/ui/login", data={"key": key, "next": "/ui/label"})
        assert r.status_code == 303, r.text
        yield client


def new_queue(admin: httpx.Client, overlap: int = 1, **fill) -> str:
    r = admin.post("/v1/labeling/queues", json={
        "use_case": "summarize", "guidelines": "Prefer the shorter, faithful summary.", "overlap": overlap,
    })
    assert r.status_code == 201, r.text
    queue_id = r.json()["id"]
    body = {"source": "generate", "a": "summarize@production", "b": "summarize@candidate",
            "prompts": ["Summarize: the cat sat on the mat.", "Summarize: rain fell all day."],
            "max_tokens": 8, **fill}
    r = admin.post(f"/v1/labeling/queues/{queue_id}/pairs", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["added"] >= 1
    return queue_id


def shown_pair(html: str) -> dict[str, str]:
    """The pair id and the two texts as the page shows them."""
    def field(pattern: str) -> str:
        match = re.search(pattern, html, re.S)
        assert match, f"{pattern} not in page"
        return match.group(1)

    return {
        "pair_id": field(r'name="pair_id" value="(\d+)"'),
        "a": html_lib.unescape(field(r'id="side-a">(.*?)</div>')),
        "b": html_lib.unescape(field(r'id="side-b">(.*?)</div>')),
        "progress": field(r'id="progress">(.*?)</p>'),
    }


def ppo_job(store: Store, steps: int = 8, **params) -> str:
    """A running PPO job that logged TRL-named metrics for ``steps`` steps (as a runner does)."""
    job = store.jobs.create("ppo", "summarize", params)
    claimed = store.jobs.claim(job.id, "test-runner")
    for step in range(1, steps + 1):
        store.jobs.add_metrics(job.id, claimed.attempts, step, {
            "objective/scores": 0.1 * step, "objective/kl": 0.02 * step, "loss/policy_avg": 1 / step,
            "loss/value_avg": 2 / step, "completions/mean_length": 20 + step,
        })
    store.jobs.set_progress(job.id, claimed.attempts, min(steps / 10, 1.0))
    return job.id


def human_votes(store: Store, wins: int, losses: int, tag: str, source: str = "human") -> None:
    """Feedback on logged completions of summarize@2 (candidate) against summarize@1."""
    for n in range(wins + losses):
        ids = (f"cmpl-{tag}-c{n}", f"cmpl-{tag}-p{n}")
        store.completions.log([
            Completion(id=ids[0], prompt=f"{tag} {n}", text="new", version=AdapterVersion("summarize", 2)),
            Completion(id=ids[1], prompt=f"{tag} {n}", text="old", version=AdapterVersion("summarize", 1)),
        ])
        store.feedback.add(FeedbackCreate(
            use_case="summarize", choice=0 if n < wins else 1, completion_ids=ids, source=source,
        ))
