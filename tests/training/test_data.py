"""Reading preference pairs and prompts: Vertex, TRL, hh-rlhf files and store snapshots."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from core.hashing import sha256_file
from core.store import FeedbackCreate, Store
from training.data import (
    freeze_source,
    load_preferences,
    load_prompts,
    split_holdout,
    write_jsonl,
)


def test_vertex_rows_pick_the_chosen_candidate_and_skip_ties(tmp_path) -> None:
    path = write_jsonl(
        tmp_path / "v.jsonl",
        [
            {"input_text": "q1", "candidate_0": "a", "candidate_1": "b", "choice": 1},
            {"input_text": "q2", "candidate_0": "c", "candidate_1": "d", "choice": 0},
            {"input_text": "q3", "candidate_0": "e", "candidate_1": "f", "choice": "tie"},
        ],
    )
    data = load_preferences(path)
    assert [(p.prompt, p.chosen, p.rejected) for p in data.pairs] == [
        ("q1", "b", "a"),
        ("q2", "c", "d"),
    ]
    assert data.format == "vertex" and data.sha256 == sha256_file(path)


def test_trl_rows_explicit_implicit_and_margin(tmp_path) -> None:
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"prompt": "p", "chosen": " yes", "rejected": " no", "margin": 2},
            {
                "chosen": "\n\nHuman: hi\n\nAssistant: hello!",
                "rejected": "\n\nHuman: hi\n\nAssistant: go away",
            },
        ],
    )
    pairs = load_preferences(path).pairs
    assert pairs[0].margin == 2.0
    assert (pairs[1].prompt, pairs[1].chosen, pairs[1].rejected) == (
        "\n\nHuman: hi\n\nAssistant:",
        " hello!",
        " go away",
    )


def test_reads_the_real_hh_rlhf_file(tmp_path, hh_rlhf: Path) -> None:
    small = tmp_path / "hh.jsonl.gz"
    with gzip.open(hh_rlhf, "rt") as f, gzip.open(small, "wt") as out:
        for _ in range(20):
            out.write(f.readline())
    data = load_preferences(small)
    assert len(data.pairs) == 20 and data.format == "trl-implicit"
    for pair in data.pairs:
        assert pair.prompt.endswith("Assistant:") and pair.chosen != pair.rejected
    assert load_prompts(small).prompts[0] == data.pairs[0].prompt


def test_bad_rows_name_the_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n{nope\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_preferences(path)
    path.write_text(json.dumps({"question": "?"}) + "\n")
    with pytest.raises(ValueError, match="Vertex fields"):
        load_preferences(path)
    with pytest.raises(ValueError, match="not a file"):
        load_preferences(tmp_path / "missing.jsonl")


def test_prompts_from_jsonl_and_text(tmp_path) -> None:
    jsonl = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"input_text": "b"}])
    assert load_prompts(jsonl).prompts == ("a", "b")
    text = tmp_path / "p.txt"
    text.write_text("one\ntwo\n")
    assert load_prompts(text).prompts == ("one", "two")


def test_split_holdout_is_seeded_and_disjoint() -> None:
    items = list(range(50))
    train, held = split_holdout(items, 0.2, seed=3)
    assert len(held) == 10 and sorted(train + held) == items
    assert split_holdout(items, 0.2, seed=3) == (train, held)
    assert split_holdout(items, 0.2, seed=4) != (train, held)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_holdout(items, 1.5, seed=0)


def test_feedback_snapshot_source(settings) -> None:
    with Store.from_settings(settings) as store:
        for i in range(3):
            store.feedback.add(
                FeedbackCreate(
                    use_case="summarize", prompt=f"q{i}", candidates=("a", "b"), choice=1
                )
            )
    source = freeze_source("feedback:summarize", settings)
    assert source.startswith("snapshot:snap-")
    data = load_preferences(source, settings)
    assert [(p.prompt, p.chosen) for p in data.pairs] == [("q0", "b"), ("q1", "b"), ("q2", "b")]
    assert data.snapshot_id == source.removeprefix("snapshot:") and len(data.sha256) == 64
    assert data.lineage()["snapshot_id"] == data.snapshot_id
    assert load_prompts(source, settings).prompts == ("q0", "q1", "q2")
    assert freeze_source("some/file.jsonl") == "some/file.jsonl"
