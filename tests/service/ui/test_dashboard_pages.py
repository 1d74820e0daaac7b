"""The dashboard through a real server: adapters, jobs with progress and plot data, and the
candidate-against-production comparison with its promotion gate explained."""

from __future__ import annotations

import json
import re

import httpx

from tests.service.ui.helpers import ADMIN_KEY, ANN_KEY, human_votes, ppo_job, signed_in


def test_the_dashboard_lists_adapters_with_aliases_and_jobs_with_progress(ui_url, store):
    job_id = ppo_job(store)
    with signed_in(ui_url, ANN_KEY) as ann:
        page = ann.get("/ui")
    assert page.status_code == 200
    adapters = page.text.split('id="adapters"')[1].split("</table>")[0]
    assert "summarize" in adapters and "candidate → 2" in adapters and "production → 1" in adapters
    jobs = page.text.split('id="jobs"')[1].split("</table>")[0]
    assert job_id in jobs and "running" in jobs and 'value="0.8"' in jobs
    assert "<polyline" in jobs  # the server-drawn sparkline of the reward mean


def test_a_job_page_carries_each_plot_series_by_step(ui_url, store):
    job_id = ppo_job(store, steps=5)
    with signed_in(ui_url, ANN_KEY) as ann:
        page = ann.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 200 and 'src="/ui/static/uPlot.iife.min.js"' in page.text
    data = json.loads(re.search(r'id="plot-data">(.*?)</script>', page.text, re.S).group(1))
    by_title = {p["title"]: p for p in data}
    assert set(by_title) == {"Reward mean", "KL to the reference", "Policy loss", "Value loss", "Response length"}
    assert by_title["Reward mean"]["metric"] == "objective/scores"
    assert by_title["Reward mean"]["x"] == [1, 2, 3, 4, 5]
    assert by_title["Response length"]["y"] == [21, 22, 23, 24, 25]


def test_the_comparison_explains_why_the_human_vote_gate_fails_then_passes(ui_url, store):
    ppo_job(store, gates={"min_human_votes": 10, "min_human_win_lower_bound": 0.5})
    with signed_in(ui_url, ADMIN_KEY) as ops:
        human_votes(store, wins=6, losses=0, tag="early")
        early = ops.get("/ui").text.split('id="comparisons"')[1].split("</table>")[0]
        assert "summarize@2" in early and "summarize@1" in early
        assert 'class="fail"' in early and "6 of the 10 votes needed so far" in early
        assert "needs 10 votes" in early
        # summarize@2's run asked for no promotion on votes: the worker leaves it to a person
        assert "Not moved automatically" in early
        human_votes(store, wins=14, losses=2, tag="later")
        human_votes(store, wins=1, losses=3, tag="judge", source="model")  # not human: not counted
        later = ops.get("/ui").text.split('id="comparisons"')[1].split("</table>")[0]
        assert 'class="pass"' in later and "is above 0.5" in later
        assert "<svg class=\"interval\"" in later  # the Wilson interval, drawn on the server
        assert "20 / 0 / 2" in later and "25.0% <small>(4 judged pairs)" in later
        chosen = ops.get("/ui", params={"a": "summarize@candidate", "b": "summarize@production"}).text
        assert 'id="chosen"' in chosen


def test_a_round_job_shows_the_thresholds_of_its_policy_stage(ui_url, store):
    gates = {"min_human_votes": 7, "min_human_win_lower_bound": 0.55}
    job = store.jobs.create("round", "summarize", {"algorithm": "ppo", "policy": {"gates": gates}})
    human_votes(store, wins=1, losses=0, tag="round")  # so that there is a comparison to show
    with signed_in(ui_url, ADMIN_KEY) as ops:
        row = ops.get("/ui").text.split('id="comparisons"')[1].split("</table>")[0]
    assert "needs 7 votes and a lower bound above 0.55" in row
    assert f"gates of job {job.id}" in row


def test_static_files_are_the_vendored_versions(ui_url):
    with httpx.Client(base_url=ui_url) as client:
        versions = client.get("/ui/static/VERSIONS.txt").text
        assert "htmx.org 2.0.11" in versions and "uplot 1.6.32" in versions
        assert client.get("/ui/static/htmx.min.js").status_code == 200
