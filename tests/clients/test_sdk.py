"""The SDK end to end against a live server: adapters (publish a folder, move an alias with
compare-and-swap, load, pin, unload), rewards, feedback (post, import, export, snapshots,
stats), completions through client.openai(), typed errors, and the async client."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest
from loraloop_client import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
)

from tests.adapters import make_adapter
from tests.api_keys import ADMIN_KEY, FEEDBACK_KEY, INFER_KEY


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory, server_settings) -> Path:
    return make_adapter(Path(server_settings.base_model), tmp_path_factory.mktemp("sdk") / "adapter", seed=11)


def test_a_published_folder_becomes_a_version_and_its_alias_moves_by_compare_and_swap(sdk, adapter_folder):
    first = sdk.adapters.publish("sdk-pub", adapter_folder, aliases=["production"])
    second = sdk.adapters.publish("sdk-pub", adapter_folder)
    assert (first.version, second.version) == (1, 2) and first.rank == 4 and first.kind == "policy"

    moved = sdk.adapters.set_alias("sdk-pub", "production", 2, expected=1)
    assert (moved.adapter, moved.alias, moved.version) == ("sdk-pub", "production", 2)
    with pytest.raises(ConflictError) as lost:
        sdk.adapters.set_alias("sdk-pub", "production", 1, expected=1)  # someone moved it first
    assert lost.value.status_code == 409 and lost.value.message
    adapter = sdk.adapters.get("sdk-pub")
    assert adapter.aliases == {"production": 2} and [v.version for v in adapter.versions] == [1, 2]
    assert "sdk-pub" in [a.name for a in sdk.adapters.list()]


def test_load_pin_and_unload_report_the_residency(sdk):
    assert sdk.adapters.load("support@1").tier == "slot"
    pinned = sdk.adapters.pin("support@1")
    assert pinned.pinned and pinned.version == 1
    assert not sdk.adapters.pin("support@1", pinned=False).pinned
    sdk.adapters.unload("support@1")
    residency = {r.version: r for r in sdk.adapters.get("support").residency}
    assert 1 not in residency or residency[1].tier == "disk"


def test_rewards_score_each_completion(sdk):
    scores = sdk.rewards.score("judge", "How do I reset my password?", ["Use the link.", "No."])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_errors_arrive_as_typed_exceptions_with_status_message_and_param(base_url, sdk):
    with pytest.raises(NotFoundError) as missing:
        sdk.adapters.get("no-such-adapter")
    assert missing.value.status_code == 404 and "no-such-adapter" in missing.value.message
    with pytest.raises(BadRequestError) as bad:
        sdk.rewards.score("judge", "", ["x"])
    assert bad.value.status_code == 400 and bad.value.param == "prompt"
    with Client(base_url, "not-a-key", max_retries=0) as stranger:
        with pytest.raises(AuthenticationError) as unknown:
            stranger.adapters.list()
    assert unknown.value.status_code == 401
    with Client(base_url, INFER_KEY, max_retries=0) as app:
        with pytest.raises(PermissionDeniedError) as denied:
            app.feedback.stats()
    assert denied.value.status_code == 403 and "feedback" in denied.value.message


def test_feedback_round_trip_post_import_export_snapshot_stats(base_url, tmp_path):
    with Client(base_url, FEEDBACK_KEY) as labelers:
        posted = labelers.feedback.post("sdk-fb", 0, prompt="Say hi", candidates=["Hi there!", "Go away."],
                                        metadata={"ticket": 7})
        assert posted.choice == 0 and posted.labeler == "labelers" and posted.metadata == {"ticket": 7}
        rows = [{"prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)]
        file = tmp_path / "prefs.jsonl.gz"
        file.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows + ["oops"]).encode()))
        report = labelers.feedback.import_file(file, "sdk-fb")
        assert (report.format, report.accepted, report.rejected_count) == ("trl", 3, 1)

        exported = list(labelers.feedback.export("sdk-fb", format="trl"))
        assert {r["chosen"] for r in exported} == {"Hi there!", "good 0", "good 1", "good 2"}
        snapshot = labelers.feedback.create_snapshot("sdk-fb")
        assert snapshot.row_count == 4 and len(snapshot.sha256) == 64
        assert labelers.feedback.get_snapshot(snapshot.id) == snapshot
        assert snapshot.id in [s.id for s in labelers.feedback.list_snapshots("sdk-fb")]
        (counts,) = labelers.feedback.stats("sdk-fb").use_cases
        assert (counts.feedback, counts.choice_0) == (4, 4)


def test_the_same_idempotency_key_posts_one_preference(base_url):
    with Client(base_url, FEEDBACK_KEY) as labelers:
        once = labelers.feedback.post("sdk-idem", 1, prompt="P", candidates=["a", "b"], idempotency_key="review-1")
        again = labelers.feedback.post("sdk-idem", 1, prompt="P", candidates=["a", "b"], idempotency_key="review-1")
        assert once.id == again.id
        with pytest.raises(ConflictError):
            labelers.feedback.post("sdk-idem", 0, prompt="P", candidates=["a", "b"], idempotency_key="review-1")
        assert labelers.feedback.stats("sdk-idem").use_cases[0].feedback == 1


def test_openai_client_is_configured_for_the_server_and_its_completions_take_feedback(base_url):
    with Client(base_url, ADMIN_KEY) as client:
        oai = client.openai()
        replies = [oai.completions.create(model="summarize@production", prompt="Hello", max_tokens=4,
                                          temperature=1.0, seed=seed) for seed in (1, 2)]
        assert replies[0].model == "summarize@1" and replies[0].usage.completion_tokens == 4
        chat = oai.chat.completions.create(model="summarize", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=4, temperature=0)
        assert chat.choices[0].message.role == "assistant"
        ids = [reply.completion_id for reply in replies]
        preference = client.feedback.post("summarize", 1, completion_ids=ids)
        assert preference.completion_ids == ids and preference.prompt == "Hello"


def test_base_url_and_api_key_come_from_the_environment(base_url, monkeypatch):
    monkeypatch.setenv("LORALOOP_BASE_URL", f"{base_url}/v1")
    monkeypatch.setenv("LORALOOP_API_KEY", INFER_KEY)
    with Client() as client:
        assert client.base_url == base_url
        assert "summarize" in [a.name for a in client.adapters.list()]


def test_the_async_client_mirrors_the_sync_one(base_url):
    async def main() -> tuple[list[str], list[float], int]:
        async with AsyncClient(base_url, ADMIN_KEY) as client:
            names = [a.name for a in await client.adapters.list()]
            scores = await client.rewards.score("judge", "Hi", ["Hello", "Bye"])
            await client.feedback.post("sdk-async", "tie", prompt="P", candidates=["x", "y"])
            rows = [row async for row in client.feedback.export("sdk-async", include_ties=True)]
            with pytest.raises(NotFoundError):
                await client.adapters.get("no-such-adapter")
            return names, scores, len(rows)

    names, scores, rows = asyncio.run(main())
    assert "summarize" in names and len(scores) == 2 and rows == 1
