"""Training reads a preference file exactly as ``feedback import`` does: the same file gives the
same pairs through a snapshot of its import and straight from disk, and a file or a line the
import refuses is refused by training with the import's own message."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import InvalidRequest, TooLarge
from core.settings import Settings
from core.store import ImportLimits, Store
from training.data import load_preferences

GOOD_TRL = {"prompt": "Q0", "chosen": " yes", "rejected": " no"}


def write(path: Path, lines: list[Any], *, gzipped: bool = False) -> Path:
    """Lines given as bytes are written verbatim, others as JSON."""
    body = b"".join(
        (ln if isinstance(ln, bytes) else json.dumps(ln).encode()) + b"\n" for ln in lines
    )
    path.write_bytes(gzip.compress(body) if gzipped else body)
    return path


def pairs_of(source: str | Path, settings: Settings) -> list[tuple[str, str, str]]:
    return [(p.prompt, p.chosen, p.rejected) for p in load_preferences(source, settings).pairs]


def imported_pairs(settings: Settings, path: Path, use_case: str) -> list[tuple[str, str, str]]:
    """The pairs training reads from a snapshot of the file's import (every line accepted)."""
    with Store.from_settings(settings) as store:
        report = store.feedback.import_jsonl(path, use_case=use_case)
        assert report.rejected_count == 0, report.rejected
        snapshot = store.snapshots.create(use_case)
    return pairs_of(f"snapshot:{snapshot.id}", settings)


def test_a_file_trains_on_the_pairs_a_snapshot_of_its_import_holds(
    tmp_path: Path, settings: Settings
) -> None:
    vertex = write(
        tmp_path / "vertex.jsonl",
        [
            {"input_text": "Q1", "candidate_0": "a", "candidate_1": "b", "choice": 1},
            {"input_text": "Q2", "candidate_0": "c", "candidate_1": "d", "choice": "tie"},
            {"input_text": "Q3", "candidate_0": " e\u00e9", "candidate_1": "f", "choice": 0},
        ],
    )
    trl = write(  # gzip with a .jsonl name: told by its bytes, as the import tells it
        tmp_path / "trl.jsonl",
        [
            GOOD_TRL,
            {
                "chosen": "\n\nHuman: hi\n\nAssistant: hello!",
                "rejected": "\n\nHuman: hi\n\nAssistant: go away",
            },
            {"prompt": "Q4", "chosen": " ", "rejected": "no", "margin": 1.5},
        ],
        gzipped=True,
    )
    for use_case, path in (("vertex", vertex), ("trl", trl)):
        from_file = pairs_of(path, settings)
        assert from_file == imported_pairs(settings, path, use_case)
    assert pairs_of(vertex, settings) == [("Q1", "b", "a"), ("Q3", " e\u00e9", "f")]
    assert pairs_of(trl, settings)[1] == ("\n\nHuman: hi\n\nAssistant:", " hello!", " go away")


def test_the_real_hh_rlhf_file_trains_on_what_its_import_stores(
    tmp_path: Path, settings: Settings, hh_rlhf: Path
) -> None:
    small = tmp_path / "hh.jsonl.gz"
    with gzip.open(hh_rlhf, "rb") as f, gzip.open(small, "wb") as out:
        for _ in range(200):
            out.write(f.readline())
    assert pairs_of(small, settings) == imported_pairs(settings, small, "harmless")


BAD_LINES: dict[str, bytes | dict[str, Any]] = {
    "not JSON": b"{nope",
    "not an object": b"[1, 2]",
    "not UTF-8": b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}',
    "a missing field": {"prompt": "Q", "chosen": "a"},
    "the same candidate twice": {"prompt": "Q", "chosen": "a", "rejected": "a"},
    "an empty prompt": {"prompt": "", "chosen": "a", "rejected": "b"},
    "a NUL character": {"prompt": "Q", "chosen": "a\u0000", "rejected": "b"},
    "a candidate that is not text": {"prompt": "Q", "chosen": 1, "rejected": "b"},
    "no turn to infer the prompt from": {"chosen": "yes", "rejected": "no"},
    "a row of another format": {"input_text": "Q", "candidate_0": "a", "candidate_1": "b"},
}


@pytest.mark.parametrize("bad", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_a_line_the_import_refuses_is_refused_by_training_with_its_reason(
    tmp_path: Path, settings: Settings, bad: bytes | dict[str, Any]
) -> None:
    path = write(tmp_path / "prefs.jsonl", [GOOD_TRL, bad, GOOD_TRL])
    with Store.from_settings(settings) as store:
        report = store.feedback.import_jsonl(path, use_case="qa")
    assert report.accepted == 2 and len(report.rejected) == 1
    (rejected,) = report.rejected
    assert rejected.line == 2
    with pytest.raises(ValueError) as refused:
        load_preferences(path, settings)
    assert str(refused.value) == f"{path}:2: {rejected.reason}"


def test_a_vertex_choice_the_import_refuses_is_refused_by_training(
    tmp_path: Path, settings: Settings
) -> None:
    good = {"input_text": "Q", "candidate_0": "a", "candidate_1": "b", "choice": 0}
    path = write(tmp_path / "prefs.jsonl", [good, {**good, "choice": 2}])
    with Store.from_settings(settings) as store:
        (rejected,) = store.feedback.import_jsonl(path, use_case="qa").rejected
    with pytest.raises(ValueError) as refused:
        load_preferences(path, settings)
    assert "choice" in rejected.reason
    assert str(refused.value) == f"{path}:2: {rejected.reason}"


WHOLE_FILE: dict[str, tuple[list[Any], bool]] = {
    "no format to tell": ([{"question": "?"}], False),
    "no JSON object": ([b"", b"   "], False),
    "a broken gzip stream": ([GOOD_TRL] * 50, True),
    "a line over the limit": ([{**GOOD_TRL, "prompt": "Q" * 200}], False),
}


@pytest.mark.parametrize("lines, gzipped", WHOLE_FILE.values(), ids=WHOLE_FILE.keys())
def test_a_file_the_import_refuses_is_refused_by_training_with_its_message(
    tmp_path: Path, settings: Settings, lines: list[Any], gzipped: bool
) -> None:
    settings = settings.model_copy(update={"max_import_line_bytes": 128})
    path = write(tmp_path / "prefs.jsonl", lines, gzipped=gzipped)
    if gzipped:
        path.write_bytes(path.read_bytes()[:-20])  # cut off the stream's end
    with Store.from_settings(settings) as store, pytest.raises((InvalidRequest, TooLarge)) as e:
        store.feedback.import_jsonl(
            path,
            use_case="qa",
            limits=ImportLimits(max_line_bytes=settings.max_import_line_bytes),
        )
    with pytest.raises(ValueError) as refused:
        load_preferences(path, settings)
    assert str(refused.value) == f"{path}: {e.value}"
