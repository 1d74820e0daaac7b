"""The labeling page and API through a real server: sign-in, anonymous randomised sides, votes
stored canonically beside feedback records, idempotency, overlap and agreement."""

from __future__ import annotations

import httpx

from tests.api_keys import auth
from tests.service.ui.helpers import (
    ADMIN_KEY,
    ANN_KEY,
    BOB_KEY,
    INFER_KEY,
    new_queue,
    shown_pair,
    signed_in,
)

HX = {"HX-Request": "true"}


def test_the_pages_need_a_sign_in_with_a_feedback_key_that_never_reaches_a_url(ui_url):
    with httpx.Client(base_url=ui_url, timeout=60) as browser:
        r = browser.get("/ui/label")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/label"
        assert browser.post("/ui/login", data={"key": "not-a-key-at-all"}).status_code == 401
        denied = browser.post("/ui/login", data={"key": INFER_KEY})
        assert denied.status_code == 403 and "lacks the &#39;feedback&#39; scope" in denied.text
        r = browser.post("/ui/login", data={"key": ANN_KEY, "next": "https://elsewhere.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/label"  # no open redirect
        cookie = r.headers["set-cookie"]
        assert ANN_KEY not in cookie and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        page = browser.get("/ui/label")
        assert page.status_code == 200 and "signed in as <b>ann</b>" in page.text
        browser.cookies.set("loraloop_session", "forged." + "0" * 64, path="/ui")
        assert browser.get("/ui/label").status_code == 303


def test_only_admins_create_and_fill_queues(ui_url, admin):
    with httpx.Client(base_url=ui_url, headers=auth(ANN_KEY), timeout=60) as labeler:
        r = labeler.post("/v1/labeling/queues", json={"use_case": "summarize"})
        assert r.status_code == 403
    r = admin.post("/v1/labeling/queues", json={"use_case": "Not A Name"})
    assert r.status_code == 400 and "invalid use case" in r.json()["error"]["message"]


def test_a_queue_filled_from_the_log_pairs_production_with_candidate(ui_url, admin):
    prompt = "Summarize: logs are useful."
    for model, seed in (("summarize@production", 1), ("summarize@candidate", 2)):
        r = admin.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 6, "seed": seed})
        assert r.status_code == 200, r.text
    queue_id = admin.post("/v1/labeling/queues", json={"use_case": "summarize"}).json()["id"]
    body = {"source": "log", "a": "summarize@production", "b": "summarize@candidate"}

    def fill() -> int:
        r = admin.post(f"/v1/labeling/queues/{queue_id}/pairs", json=body)
        assert r.status_code == 200, r.text
        return r.json()["added"]

    added = fill()
    while added == 0:  # the completion log writes off the request path; it lands shortly
        added = fill()
    assert added == 1 and fill() == 0  # a completion is queued once
    assert admin.get(f"/v1/labeling/queues/{queue_id}").json()["progress"]["pairs"] == 1


def test_a_vote_on_shown_sides_is_stored_canonically_with_sides_time_and_rationale(ui_url, admin):
    queue_id = new_queue(admin)
    with signed_in(ui_url, ANN_KEY) as ann:
        page = ann.get(f"/ui/label/{queue_id}")
        assert page.status_code == 200
        assert "summarize@" not in page.text and "summarize@" not in page.text.lower()  # anonymous
        assert "Prefer the shorter, faithful summary." in page.text  # guidelines
        shown = shown_pair(page.text)
        assert shown["progress"].startswith("1 of ")
        assert shown_pair(ann.get(f"/ui/label/{queue_id}").text) == shown  # stable on reload
        r = ann.post(f"/ui/label/{queue_id}/votes", headers=HX, data={
            "pair_id": shown["pair_id"], "choice": "A", "rationale": "more faithful",
            "shown_at_ms": "0",
        })
        assert r.status_code == 200 and "A was <code>summarize@" in r.text  # revealed after the vote
    (vote,) = admin.get(f"/v1/labeling/queues/{queue_id}/votes").json()["data"]
    feedback_a_index = int(vote["shown"][0])  # the completion shown as A
    assert vote["verdict"] == str(feedback_a_index) and vote["rationale"] == "more faithful"
    assert vote["labeler"] == "ann" and vote["time_ms"] > 0
    export = admin.get("/v1/feedback/export", params={"use_case": "summarize", "format": "trl"}).text
    assert shown["a"] in export  # the chosen text is what ann saw as A


def test_sides_are_randomised_per_labeler(ui_url, admin):
    queue_id = new_queue(admin, overlap=2, prompts=[f"Summarize: item {n}." for n in range(6)])
    swaps = {}
    for name, key in (("ann", ANN_KEY), ("bob", BOB_KEY)):
        with signed_in(ui_url, key) as client:
            seen = []
            while (page := client.get(f"/ui/label/{queue_id}").text) and 'name="pair_id"' in page:
                shown = shown_pair(page)
                seen.append(shown["a"])
                client.post(f"/ui/label/{queue_id}/votes", headers=HX, data={"pair_id": shown["pair_id"], "choice": "tie"})
            swaps[name] = seen
    assert len(swaps["ann"]) == len(swaps["bob"]) >= 5
    assert swaps["ann"] != swaps["bob"]  # the fixed secret gives some pairs different sides


def test_a_vote_is_idempotent_and_final(ui_url, admin):
    queue_id = new_queue(admin)
    with signed_in(ui_url, BOB_KEY) as bob:
        shown = shown_pair(bob.get(f"/ui/label/{queue_id}").text)
        vote = {"pair_id": shown["pair_id"], "choice": "B"}
        assert bob.post(f"/ui/label/{queue_id}/votes", headers=HX, data=vote).status_code == 200
        assert bob.post(f"/ui/label/{queue_id}/votes", headers=HX, data=vote).status_code == 200
        changed = bob.post(f"/ui/label/{queue_id}/votes", headers=HX, data={**vote, "choice": "A"})
        assert changed.status_code == 409 and "final" in changed.json()["error"]["message"]
    votes = admin.get(f"/v1/labeling/queues/{queue_id}/votes").json()["data"]
    assert len(votes) == 1


def test_overlap_collects_several_labelers_and_reports_their_agreement(ui_url, admin):
    queue_id = new_queue(admin, overlap=2)
    for key, choice in ((ANN_KEY, "both_bad"), (BOB_KEY, "both_bad")):
        with signed_in(ui_url, key) as client:
            shown = shown_pair(client.get(f"/ui/label/{queue_id}").text)
            client.post(f"/ui/label/{queue_id}/votes", headers=HX, data={"pair_id": shown["pair_id"], "choice": choice})
    queue = admin.get(f"/v1/labeling/queues/{queue_id}").json()
    assert queue["progress"]["complete"] == 1
    (agreement,) = queue["agreement"]
    assert (agreement["labeler_a"], agreement["labeler_b"], agreement["percent"]) == ("ann", "bob", 1.0)
    with signed_in(ui_url, ADMIN_KEY) as ops:
        page = ops.get("/ui/label").text
        assert "ann · bob: 100% agree" in page and "New queue" in page


def test_an_admin_creates_and_fills_a_queue_from_the_page(ui_url, admin):
    with signed_in(ui_url, ADMIN_KEY) as ops:
        r = ops.post("/ui/label/queues", data={"use_case": "support", "name": "support round 1", "overlap": "2"})
        assert r.status_code == 303
        queue = next(q for q in admin.get("/v1/labeling/queues", params={"use_case": "support"}).json()["data"])
        assert (queue["name"], queue["overlap"], queue["created_by"]) == ("support round 1", 2, "ops")
        r = ops.post(f"/ui/label/{queue['id']}/pairs", data={
            "source": "generate", "a": "support", "prompts": "Where is my order?\n---\nCan I return it?",
        })
        assert r.status_code == 303 and "added" in r.headers["location"]
        assert admin.get(f"/v1/labeling/queues/{queue['id']}").json()["progress"]["pairs"] >= 1
    with signed_in(ui_url, ANN_KEY) as ann:  # a labeler cannot
        assert ann.post("/ui/label/queues", data={"use_case": "support"}).status_code == 403
