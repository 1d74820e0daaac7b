"""Aliases move by compare-and-swap: of two movers from the same state, exactly one wins."""

from __future__ import annotations

import threading

import pytest

from core.errors import Conflict, NotFound
from core.registry import Registry


def test_set_move_and_delete_an_alias(three_versions: Registry):
    registry = three_versions
    registry.set_alias("summarize", "production", 1, expected=None)
    registry.set_alias("summarize", "production", 2, expected=1)
    registry.set_alias("summarize", "candidate", 3)
    assert registry.aliases("summarize") == {"production": 2, "candidate": 3}
    registry.set_alias("summarize", "candidate", None, expected=3)
    assert registry.aliases("summarize") == {"production": 2}
    with pytest.raises(NotFound):
        registry.resolve("summarize@candidate")
    registry.set_alias("summarize", "candidate", 1, expected=None)  # re-created after delete
    assert registry.resolve("summarize@candidate").version == 1


def test_a_stale_expectation_is_a_conflict(three_versions: Registry):
    three_versions.set_alias("summarize", "production", 1)
    with pytest.raises(Conflict, match="points to 1, not 2"):
        three_versions.set_alias("summarize", "production", 3, expected=2)
    with pytest.raises(Conflict):
        three_versions.set_alias("summarize", "production", 3, expected=None)
    assert three_versions.aliases("summarize") == {"production": 1}


def test_an_alias_cannot_point_to_a_missing_version(three_versions: Registry):
    with pytest.raises(NotFound, match="summarize@9"):
        three_versions.set_alias("summarize", "production", 9)


@pytest.mark.parametrize("round_", range(3))
def test_two_concurrent_moves_from_the_same_state_one_wins(three_versions: Registry, round_):
    registry = three_versions
    registry.set_alias("summarize", "production", 1)
    start = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def move(version: int) -> None:
        start.wait()
        try:
            registry.set_alias("summarize", "production", version, expected=1)
            outcomes[version] = "won"
        except Conflict:
            outcomes[version] = "conflict"

    threads = [threading.Thread(target=move, args=(v,)) for v in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["conflict", "won"]
    winner = next(v for v, outcome in outcomes.items() if outcome == "won")
    assert registry.aliases("summarize")["production"] == winner


def test_the_stored_cas_primitive_refuses_a_stale_etag(registry: Registry):
    registry.store.replace("probe.json", b"1", None)
    first = registry.store.read("probe.json")
    registry.store.replace("probe.json", b"2", first.etag)
    with pytest.raises(Conflict):
        registry.store.replace("probe.json", b"3", first.etag)
    with pytest.raises(Conflict):
        registry.store.replace("probe.json", b"3", None)
    assert registry.store.read("probe.json").data == b"2"


def test_moves_without_an_expectation_all_land_when_they_race(three_versions: Registry):
    # A training run moving @candidate must not fail because another writer moved it first.
    registry = three_versions
    registry.set_alias("summarize", "candidate", 1)
    movers = 8
    start = threading.Barrier(movers)
    errors: list[Exception] = []

    def move(version: int) -> None:
        start.wait()
        try:
            registry.set_alias("summarize", "candidate", version)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=move, args=(1 + i % 3,)) for i in range(movers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert registry.aliases("summarize")["candidate"] in (1, 2, 3)
