"""Preference-data file formats: Vertex AI RLHF and TRL, as JSON lines, gzip or plain.

Vertex: ``{"input_text", "candidate_0", "candidate_1", "choice": 0|1}``.
TRL:    ``{"prompt", "chosen", "rejected"}``, or ``{"chosen", "rejected"}`` with the prompt
        implicit, as in Anthropic's hh-rlhf, where both are whole dialogues::

            "\\n\\nHuman: q\\n\\nAssistant: a\\n\\nHuman: q2\\n\\nAssistant: <reply>"
            └──────────────── prompt (shared prefix) ─────────────────┘└─ reply ─┘

A TRL row becomes feedback with ``candidates = (chosen, rejected)`` and ``choice = 0``.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from core.errors import InvalidRequest, TooLarge
from core.store.records import (
    TIE,
    FeedbackCreate,
    FeedbackFormat,
    FeedbackSource,
    PreferenceRow,
    VertexRow,
)

ASSISTANT_TURN = "\n\nAssistant:"
GZIP_MAGIC = b"\x1f\x8b"

# API field name -> the file's field name, so validation errors name the file's fields.
FIELD_NAMES: dict[FeedbackFormat, dict[str, str]] = {
    "vertex": {
        "prompt": "input_text",
        "candidates": "candidate_0/candidate_1",
        "candidates[0]": "candidate_0",
        "candidates[1]": "candidate_1",
    },
    "trl": {
        "candidates": "chosen/rejected",
        "candidates[0]": "chosen",
        "candidates[1]": "rejected",
    },
}
_FIELDS: dict[FeedbackFormat, tuple[str, ...]] = {
    "vertex": ("input_text", "candidate_0", "candidate_1", "choice"),
    "trl": ("prompt", "chosen", "rejected"),
}


def detect_format(row: Mapping[str, Any]) -> FeedbackFormat | None:
    """The format whose field names ``row`` uses, or None."""
    if "input_text" in row or "candidate_0" in row or "candidate_1" in row:
        return "vertex"
    if "chosen" in row or "rejected" in row:
        return "trl"
    return None


def parse_row(
    fmt: FeedbackFormat,
    row: Mapping[str, Any],
    *,
    use_case: str,
    labeler: str | None = None,
    source: FeedbackSource | str = FeedbackSource.HUMAN,
    idempotency_key: str | None = None,
) -> FeedbackCreate:
    """One decoded JSON line as new feedback (not yet validated). Fields the format does not
    define are kept in ``metadata``. Raises InvalidRequest naming a missing field."""
    extra = {key: value for key, value in row.items() if key not in _FIELDS[fmt]}
    if fmt == "vertex":
        _require(row, "input_text", "candidate_0", "candidate_1", "choice")
        prompt, candidates, choice = (
            row["input_text"],
            (row["candidate_0"], row["candidate_1"]),
            row["choice"],
        )
    else:
        _require(row, "chosen", "rejected")
        chosen, rejected = row["chosen"], row["rejected"]
        if "prompt" in row:
            prompt = row["prompt"]
        else:
            prompt, chosen, rejected = implicit_prompt(chosen, rejected)
        candidates, choice = (chosen, rejected), 0
    return FeedbackCreate(
        use_case=use_case,
        choice=choice,
        prompt=prompt,
        candidates=candidates,
        labeler=labeler,
        source=source,
        metadata=extra,
        idempotency_key=idempotency_key,
    )


def implicit_prompt(chosen: object, rejected: object) -> tuple[str, str, str]:
    """Split two whole dialogues into (prompt, chosen reply, rejected reply).

    The prompt is their shared prefix up to and including the last ``"\\n\\nAssistant:"``
    in it (the replies keep their leading space). Cutting at a turn marker, not at the raw
    common prefix, keeps replies that happen to start with the same words whole.
    """
    for param, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str):
            raise InvalidRequest(
                f"{param}: must be a string (conversational TRL rows are not supported)",
                param=param,
            )
    assert isinstance(chosen, str) and isinstance(rejected, str)
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(ASSISTANT_TURN)
    if cut < 0:
        raise InvalidRequest(
            "prompt: missing, and chosen and rejected share no '\\n\\nAssistant:' turn to infer "
            "it from; add a prompt field",
            param="prompt",
        )
    end = cut + len(ASSISTANT_TURN)
    return chosen[:end], chosen[end:], rejected[end:]


def to_vertex(prompt: str, candidates: tuple[str, str], choice: int) -> VertexRow:
    return {
        "input_text": prompt,
        "candidate_0": candidates[0],
        "candidate_1": candidates[1],
        "choice": "tie" if choice == TIE else choice,
    }


def to_preference(prompt: str, candidates: tuple[str, str], choice: int) -> PreferenceRow:
    """The TRL row of a non-tie record (a tie has no chosen side)."""
    assert choice in (0, 1), "ties have no TRL form"
    return {"prompt": prompt, "chosen": candidates[choice], "rejected": candidates[1 - choice]}


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """Bounds on reading one import file; going past one raises TooLarge naming its setting.

    Lines are read one at a time through a bounded buffer, so memory stays within a few lines
    however large the file or its decompressed stream.
    """

    max_decompressed_bytes: int | None = None  # the whole file after gunzip; None: no bound
    max_line_bytes: int = 4 << 20  # one line, newline excluded: above any row the store accepts


def read_lines(
    file: str | os.PathLike[str] | BinaryIO, limits: ImportLimits = ImportLimits()
) -> Iterator[tuple[int, str | None]]:
    """Yield (1-based line number, text) for each line of a JSONL file, gzip or plain.

    Gzip is recognised by its magic bytes, not the file name, so uploads work too. A line
    that is not UTF-8 yields text None (the caller rejects it and goes on). A broken gzip
    stream raises InvalidRequest: the rest of the file cannot be read. A line or a file over
    ``limits`` raises TooLarge.
    """
    if isinstance(file, str | os.PathLike):
        with Path(file).open("rb") as handle:
            yield from read_lines(handle, limits)
        return
    # Look at the magic bytes without consuming them: seek back where the file allows it
    # (uploads are BytesIO or SpooledTemporaryFile, which cannot be wrapped in a
    # BufferedReader), peek() through a buffer otherwise.
    if file.seekable():
        start = file.tell()
        magic = file.read(2)
        file.seek(start)
        stream: Any = file
    else:
        stream = io.BufferedReader(cast(Any, file))
        magic = stream.peek(2)[:2]
    if magic == GZIP_MAGIC:
        # GzipFile inflates in bounded steps as lines are read: a bomb never sits in memory.
        stream = gzip.GzipFile(fileobj=stream, mode="rb")  # an upload says "w+b": read it
    total = 0
    number = 0
    try:
        while raw := stream.readline(limits.max_line_bytes + 1):
            number += 1
            total += len(raw)
            _check_limits(number, raw, total, limits)
            try:
                # utf-8-sig drops a byte-order mark some editors put on the first line.
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                yield number, None
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidRequest(f"file: cannot read the gzip stream ({exc})", param="file") from exc


def _check_limits(number: int, raw: bytes, total: int, limits: ImportLimits) -> None:
    if len(raw) > limits.max_line_bytes and not raw.endswith(b"\n"):
        raise TooLarge(
            f"file: line {number} is longer than max_import_line_bytes "
            f"({limits.max_line_bytes} bytes); is it a JSON lines file?",
            param="file",
        )
    if limits.max_decompressed_bytes is not None and total > limits.max_decompressed_bytes:
        raise TooLarge(
            f"file: over max_import_decompressed_bytes ({limits.max_decompressed_bytes} bytes "
            "of JSON lines after decompression); split it into several imports",
            param="file",
        )


def _require(row: Mapping[str, Any], *fields: str) -> None:
    for field in fields:
        if field not in row:
            raise InvalidRequest(f"{field}: missing", param=field)
