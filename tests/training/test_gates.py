"""Promotion: candidate always moves; production only when asked and every gate passes."""

from __future__ import annotations

import pytest

from core.names import AdapterVersion
from core.registry import open_registry
from core.store import Completion, FeedbackCreate, Store
from tests.adapters import make_adapter
from training.config import Gates
from training.gates import check_gates, promote, promote_on_votes


@pytest.fixture
def registry(settings, base_info, tiny_llama_dir, tmp_path):
    registry = open_registry(settings, base_info)
    for seed in (1, 2, 3):
        registry.publish(
            make_adapter(tiny_llama_dir, tmp_path / f"a{seed}", seed=seed), "qa", "policy"
        )
    return registry


def test_check_gates_reads_metrics_by_name() -> None:
    gates = Gates(min_reward_gain=0.5, max_kl=5.0, min_win_rate=0.6)
    results = {r.gate: r for r in check_gates(gates, {"reward_gain": 0.7, "kl_to_base": 6.0})}
    assert results["min_reward_gain"].passed
    assert not results["max_kl"].passed and results["max_kl"].value == 6.0
    assert (
        not results["min_win_rate"].passed and results["min_win_rate"].value is None
    )  # missing fails
    assert check_gates(Gates(), {"reward_gain": 1.0}) == []


def test_candidate_always_moves_production_only_on_request(registry) -> None:
    result = promote(
        registry,
        "qa",
        1,
        Gates(max_kl=1.0),
        {"kl_to_base": 0.5},
        requested=False,
        expected_production=None,
    )
    assert result.candidate and not result.production and "not requested" in result.reason
    assert registry.aliases("qa") == {"candidate": 1}

    result = promote(
        registry,
        "qa",
        2,
        Gates(max_kl=1.0),
        {"kl_to_base": 0.5},
        requested=True,
        expected_production=None,
    )
    assert result.production and result.gates_passed
    assert registry.aliases("qa") == {"candidate": 2, "production": 2}


def test_failed_gate_keeps_production(registry) -> None:
    registry.set_alias("qa", "production", 1)
    result = promote(
        registry,
        "qa",
        2,
        Gates(min_reward_gain=1.0),
        {"reward_gain": 0.2},
        requested=True,
        expected_production=1,
    )
    assert not result.production and "min_reward_gain" in result.reason
    assert registry.aliases("qa") == {"candidate": 2, "production": 1}


def test_production_moved_by_someone_else_meanwhile_is_not_overwritten(registry) -> None:
    registry.set_alias("qa", "production", 1)
    registry.set_alias("qa", "production", 3)  # another run promoted version 3 after ours started
    result = promote(registry, "qa", 2, Gates(), {}, requested=True, expected_production=1)
    assert not result.production and "moved meanwhile" in result.reason
    assert registry.aliases("qa") == {"candidate": 2, "production": 3}


def record_votes(store, wins: int, losses: int, first: int) -> None:
    """Human feedback comparing a completion of qa@2 (candidate) with one of qa@1."""
    for n in range(first, first + wins + losses):
        ids = (f"cmpl-cand-{n}", f"cmpl-prod-{n}")
        store.completions.log([
            Completion(id=ids[0], prompt=f"p{n}", text="new", version=AdapterVersion("qa", 2)),
            Completion(id=ids[1], prompt=f"p{n}", text="old", version=AdapterVersion("qa", 1)),
        ])
        store.feedback.add(FeedbackCreate(use_case="qa", choice=0 if n < first + wins else 1, completion_ids=ids))


def test_a_run_with_human_vote_gates_leaves_production_to_the_labelers(registry) -> None:
    result = promote(
        registry, "qa", 1, Gates(min_human_votes=10), {}, requested=True, expected_production=None
    )
    assert result.candidate and not result.production and "human_votes=None" in result.reason


def test_production_moves_to_the_candidate_once_labelers_prefer_it(registry, settings) -> None:
    registry.set_alias("qa", "production", 1)
    registry.set_alias("qa", "candidate", 2)
    gates = Gates(min_human_votes=10, min_human_win_lower_bound=0.5)
    with Store.from_settings(settings) as store:
        record_votes(store, wins=6, losses=0, first=0)
        too_few = promote_on_votes(registry, store, "qa", gates)
        assert not too_few.production and "human_votes=6" in too_few.reason
        record_votes(store, wins=6, losses=6, first=6)  # 12 of 18: lower bound ~0.44
        unsure = promote_on_votes(registry, store, "qa", gates)
        assert not unsure.production and "min_human_win_lower_bound" in unsure.reason
        assert registry.aliases("qa")["production"] == 1
        record_votes(store, wins=20, losses=0, first=18)  # 32 of 38
        preferred = promote_on_votes(registry, store, "qa", gates)
        assert preferred.production and preferred.gates_passed
        assert registry.aliases("qa")["production"] == 2
