"""The worker moves a pending candidate to production once labelers prefer it, end to end
through the store: votes posted -> a worker pass -> the alias moved; and leaves alone the
candidates whose run did not ask for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.base.folders import base_model_info
from core.names import AdapterVersion
from core.registry import open_registry
from core.settings import Settings
from core.store import Completion, FeedbackCreate, Store
from tests.adapters import make_adapter
from training.jobs.local import LocalRunner
from training.jobs.worker import Worker

HUMAN_GATES = {"min_human_votes": 10, "min_human_win_lower_bound": 0.5}


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.from_settings(settings) as opened:
        yield opened


@pytest.fixture
def registry(settings: Settings):
    return open_registry(settings, base_model_info(settings))


def publish_pair(registry, tmp_path: Path, tiny_llama_dir: Path, adapter: str,
                 config: dict[str, Any], metrics: dict[str, Any] | None = None) -> None:
    """``adapter@1`` in production and ``adapter@2`` the candidate, made by a run with
    ``config`` (what its lineage records)."""
    for version in (1, 2):
        folder = make_adapter(tiny_llama_dir, tmp_path / f"{adapter}-{version}", seed=version)
        registry.publish(folder, adapter, "policy", metrics=metrics or {},
                         lineage={"config": config} if version == 2 else {})
    registry.set_alias(adapter, "production", 1)
    registry.set_alias(adapter, "candidate", 2)


def vote(store: Store, adapter: str, wins: int, losses: int, first: int = 0) -> None:
    """People's verdicts on completions of adapter@2 (candidate) against adapter@1."""
    for n in range(first, first + wins + losses):
        ids = (f"{adapter}-new-{n}", f"{adapter}-old-{n}")
        store.completions.log([
            Completion(id=ids[0], prompt=f"p{n}", text="new", version=AdapterVersion(adapter, 2)),
            Completion(id=ids[1], prompt=f"p{n}", text="old", version=AdapterVersion(adapter, 1)),
        ])
        choice = 0 if n < first + wins else 1
        store.feedback.add(FeedbackCreate(use_case=adapter, choice=choice, completion_ids=ids))


def test_a_worker_pass_moves_production_once_labelers_prefer_the_candidate(
    settings: Settings, store: Store, registry, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    publish_pair(registry, tmp_path, tiny_llama_dir, "qa",
                 {"promote": True, "gates": dict(HUMAN_GATES, max_kl=5.0)}, {"kl_to_base": 1.0})
    worker = Worker(settings, store, LocalRunner(settings), promotion_every=0)

    vote(store, "qa", wins=5, losses=1)  # too few votes
    worker.tick()
    assert registry.aliases("qa")["production"] == 1
    vote(store, "qa", wins=6, losses=6, first=6)  # 11 of 18: lower bound under 0.5
    worker.tick()
    assert registry.aliases("qa")["production"] == 1
    vote(store, "qa", wins=20, losses=0, first=18)  # 31 of 38
    worker.tick()
    assert registry.aliases("qa") == {"candidate": 2, "production": 2}


@pytest.mark.parametrize("config, metrics", [
    ({"promote": False, "gates": HUMAN_GATES}, {}),  # the run did not ask for promotion
    ({"promote": True, "gates": {}}, {}),  # no human-vote gate: a person decides
    ({"promote": True, "gates": dict(HUMAN_GATES, max_kl=5.0)}, {"kl_to_base": 9.0}),  # missed
])
def test_a_candidate_whose_run_did_not_ask_for_it_waits_for_a_person(
    settings: Settings, store: Store, registry, tmp_path: Path, tiny_llama_dir: Path,
    config: dict[str, Any], metrics: dict[str, Any],
) -> None:
    publish_pair(registry, tmp_path, tiny_llama_dir, "qa", config, metrics)
    vote(store, "qa", wins=40, losses=0)
    Worker(settings, store, LocalRunner(settings), promotion_every=0).tick()
    assert registry.aliases("qa")["production"] == 1


def test_the_worker_checks_candidates_only_every_promotion_every_seconds(
    settings: Settings, store: Store, registry, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    publish_pair(registry, tmp_path, tiny_llama_dir, "qa", {"promote": True, "gates": HUMAN_GATES})
    worker = Worker(settings, store, LocalRunner(settings), promotion_every=3600)
    worker.tick()  # the first pass checks (nothing to move yet)
    vote(store, "qa", wins=40, losses=0)
    worker.tick()  # within the hour: no check
    assert registry.aliases("qa")["production"] == 1
    worker._next_promotion_check = 0.0  # the hour is over
    worker.tick()
    assert registry.aliases("qa")["production"] == 2
