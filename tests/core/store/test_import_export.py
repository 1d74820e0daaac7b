"""Bulk import (Vertex and TRL, gzip or plain, real hh-rlhf data) and export round trips."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import InvalidRequest, TooLarge
from core.store import ImportLimits, Store, importer
from core.store import feedback as feedback_module
from core.store.models import FeedbackRow
from core.store.validation import ValidFeedback
from core.text_limits import MAX_CANDIDATE_CHARS


def count_feedback(store: Store, use_case: str) -> int:
    with store.database.read() as session:
        statement = select(func.count()).where(FeedbackRow.use_case == use_case)
        return session.scalar(statement) or 0


def write_jsonl(path: Path, lines: list[Any], *, gzipped: bool = False) -> Path:
    """Lines given as str are written verbatim (to plant broken JSON), others as JSON."""
    body = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines).encode()
    path.write_bytes(gzip.compress(body) if gzipped else body)
    return path


def test_the_real_hh_rlhf_file_imports_all_2312_pairs_with_implicit_prompts(
    store: Store, hh_rlhf: Path
) -> None:
    report = store.feedback.import_jsonl(hh_rlhf, use_case="harmless")
    assert (report.format, report.accepted, report.rejected_count) == ("trl", 2312, 0)
    assert count_feedback(store, "harmless") == 2312

    # prompt + reply gives back each original dialogue exactly, in file order.
    with gzip.open(hh_rlhf, "rt", encoding="utf-8") as lines:
        originals = [json.loads(line) for line in lines]
    exported = list(store.feedback.export("harmless", "trl"))
    assert len(exported) == 2312
    for original, row in zip(originals, exported, strict=True):
        assert row["prompt"].endswith("\n\nAssistant:")
        assert row["prompt"] + row["chosen"] == original["chosen"]
        assert row["prompt"] + row["rejected"] == original["rejected"]


VERTEX_GOOD = {"input_text": "Q1", "candidate_0": "a", "candidate_1": "b", "choice": 1}


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_vertex_import_reports_bad_lines_by_number_and_stores_the_rest(
    store: Store, tmp_path: Path, gzipped: bool
) -> None:
    lines: list[Any] = [
        VERTEX_GOOD,  # 1
        '{"input_text": "Q2", "candidate_0": ',  # 2 broken JSON
        {"input_text": "Q3", "candidate_0": "a", "choice": 0},  # 3 no candidate_1
        {**VERTEX_GOOD, "choice": 2},  # 4 bad choice
        "",  # 5 blank: skipped
        {**VERTEX_GOOD, "candidate_1": "a"},  # 6 same texts
        {**VERTEX_GOOD, "input_text": "Q7", "choice": "tie", "batch": "b7"},  # 7 fine (tie)
        [1, 2],  # 8 not an object
        {**VERTEX_GOOD, "candidate_0": "x" * (MAX_CANDIDATE_CHARS + 1)},  # 9 too long
        {**VERTEX_GOOD, "input_text": ""},  # 10 empty prompt
    ]
    path = write_jsonl(tmp_path / ("v.jsonl.gz" if gzipped else "v.jsonl"), lines, gzipped=gzipped)

    report = store.feedback.import_jsonl(path, use_case="qa", labeler="bob")

    assert (report.format, report.accepted, report.rejected_count) == ("vertex", 2, 7)
    reasons = {r.line: r.reason for r in report.rejected}
    assert sorted(reasons) == [2, 3, 4, 6, 8, 9, 10]
    assert "invalid JSON" in reasons[2]
    assert "candidate_1" in reasons[3]
    assert "choice" in reasons[4]
    assert "candidate_0/candidate_1" in reasons[6]
    assert "object" in reasons[8]
    assert "candidate_0" in reasons[9] and "limit" in reasons[9]
    assert "input_text" in reasons[10] and "empty" in reasons[10]
    rows = list(store.feedback.export("qa", "vertex", include_ties=True))
    assert rows == [
        VERTEX_GOOD,
        {"input_text": "Q7", "candidate_0": "a", "candidate_1": "b", "choice": "tie"},
    ]


def test_trl_rows_with_an_explicit_prompt_and_bad_implicit_ones(store: Store) -> None:
    body = "\n".join(
        json.dumps(row)
        for row in [
            {"prompt": "P", "chosen": " good", "rejected": " bad"},
            {"chosen": "no turns here", "rejected": "none here"},  # prompt cannot be inferred
            {"prompt": "P", "chosen": [{"role": "assistant"}], "rejected": "x"},  # conversational
        ]
    ).encode()
    report = store.feedback.import_jsonl(io.BytesIO(body), use_case="qa")
    assert (report.format, report.accepted) == ("trl", 1)
    reasons = {r.line: r.reason for r in report.rejected}
    assert "prompt" in reasons[2]
    assert "chosen" in reasons[3]
    assert list(store.feedback.export("qa", "trl")) == [
        {"prompt": "P", "chosen": " good", "rejected": " bad"}
    ]


def test_a_file_in_neither_format_is_refused_as_a_whole(store: Store) -> None:
    with pytest.raises(InvalidRequest) as caught:
        neither = io.BytesIO(b'{"question": "?", "answer": "!"}\n')
        store.feedback.import_jsonl(neither, use_case="qa")
    assert caught.value.param == "format"
    with pytest.raises(InvalidRequest) as caught:
        store.feedback.import_jsonl(io.BytesIO(b"\n\n"), use_case="qa")
    assert caught.value.param == "file"
    with pytest.raises(InvalidRequest) as caught:
        store.feedback.import_jsonl(io.BytesIO(b"{}"), use_case="Bad Name")
    assert caught.value.param == "use_case"


def test_a_truncated_gzip_file_imports_nothing(store: Store, tmp_path: Path) -> None:
    whole = gzip.compress(b"".join(json.dumps(VERTEX_GOOD).encode() + b"\n" for _ in range(2000)))
    with pytest.raises(InvalidRequest, match="gzip"):
        store.feedback.import_jsonl(io.BytesIO(whole[: len(whole) // 2]), use_case="qa")
    assert count_feedback(store, "qa") == 0


def test_a_crash_mid_import_leaves_nothing_half_imported(
    store: Store, hh_rlhf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks, so some INSERTs have already run in the transaction when the crash hits.
    monkeypatch.setattr(importer, "INSERT_CHUNK_ROWS", 100)
    calls = 0
    original = ValidFeedback.row_values

    def crash_at_row_1000(self: ValidFeedback, created_at: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1000:
            raise RuntimeError("simulated crash")
        return original(self, created_at)

    monkeypatch.setattr(ValidFeedback, "row_values", crash_at_row_1000)
    with pytest.raises(RuntimeError, match="simulated crash"):
        store.feedback.import_jsonl(hh_rlhf, use_case="harmless")
    assert count_feedback(store, "harmless") == 0


def test_retrying_an_import_with_its_idempotency_key_adds_nothing_twice(
    store: Store, hh_rlhf: Path
) -> None:
    first = store.feedback.import_jsonl(hh_rlhf, use_case="harmless", idempotency_key="upload-7")
    again = store.feedback.import_jsonl(hh_rlhf, use_case="harmless", idempotency_key="upload-7")
    assert (first.accepted, first.duplicates) == (2312, 0)
    assert (again.accepted, again.duplicates, again.rejected_count) == (2312, 2312, 0)
    assert count_feedback(store, "harmless") == 2312


@pytest.mark.parametrize("fmt", ["vertex", "trl"])
def test_export_then_import_reproduces_the_same_rows(
    store: Store, hh_rlhf: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feedback_module, "EXPORT_PAGE_ROWS", 333)  # several pages
    store.feedback.import_jsonl(hh_rlhf, use_case="harmless")
    # hh-rlhf rows are all choice 0 (chosen first); add a choice-1 row.
    store.feedback.import_jsonl(io.BytesIO(json.dumps(VERTEX_GOOD).encode()), use_case="harmless")
    exported = list(store.feedback.export("harmless", fmt))  # type: ignore[arg-type]
    body = "".join(json.dumps(row) + "\n" for row in exported).encode()

    report = store.feedback.import_jsonl(io.BytesIO(body), use_case="copy")

    assert (report.format, report.accepted, report.rejected_count) == (fmt, 2313, 0)
    assert list(store.feedback.export("copy", fmt)) == exported  # type: ignore[arg-type]


def test_export_checks_its_arguments_before_reading(store: Store) -> None:
    with pytest.raises(InvalidRequest) as caught:
        store.feedback.export("qa", "csv")  # type: ignore[arg-type]
    assert caught.value.param == "format"
    with pytest.raises(InvalidRequest) as caught:
        store.feedback.export("qa", "trl", include_ties=True)
    assert caught.value.param == "include_ties"
    assert list(store.feedback.export("nothing-here", "vertex")) == []


def test_a_large_import_spills_to_disk_and_goes_in_bounded_chunks_all_or_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "SPOOL_MEMORY_BYTES", 4096)  # spill the valid rows to disk
    monkeypatch.setattr(importer, "INSERT_CHUNK_BYTES", 8192)  # chunks bounded by bytes too
    inserted: list[int] = []
    original = Session.execute

    def record_chunk(self: Session, statement: Any, params: Any = None, *args: Any, **kw: Any) -> Any:
        if isinstance(params, list):
            inserted.append(len(params))
        return original(self, statement, params, *args, **kw)

    monkeypatch.setattr(Session, "execute", record_chunk)
    rows = [{**VERTEX_GOOD, "input_text": f"q{i}"} for i in range(1000)]
    body = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    report = store.feedback.import_jsonl(io.BytesIO(body), use_case="qa")
    assert (report.accepted, count_feedback(store, "qa")) == (1000, 1000)
    assert sum(inserted) == 1000 and max(inserted) < 200  # several small INSERTs, one transaction

    bomb = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows) * 20)
    with pytest.raises(TooLarge, match="max_import_decompressed_bytes"):
        store.feedback.import_jsonl(
            io.BytesIO(bomb), use_case="bomb", limits=ImportLimits(max_decompressed_bytes=1 << 20)
        )
    assert count_feedback(store, "bomb") == 0
