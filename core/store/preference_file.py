"""A preference file read line by line into valid feedback records: the one reader of them.

``feedback import`` stores the records it yields and training trains on them, so a file is
accepted, and each bad line refused, with the same reasons by both::

    bytes ─ read_lines (gzip by magic bytes, bounded lines) ─ JSON object per line
          ─ detect_format (first object) ─ parse_row (Vertex / TRL) ─ validate_feedback

Lines that are not valid say why in ``FileLine.rejection``; the caller decides what a bad line
means (the import reports it and stores the rest; training refuses the file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from core.errors import InvalidRequest
from core.store.formats import FIELD_NAMES, ImportLimits, detect_format, parse_row, read_lines
from core.store.records import FeedbackFormat, FeedbackSource
from core.store.validation import ValidFeedback, validate_feedback


@dataclass(frozen=True, slots=True)
class FileLine:
    """One non-blank line: its JSON object and the record it makes, or why it is refused."""

    number: int  # 1-based
    row: dict[str, Any] | None = None  # None: the line is not a JSON object
    feedback: ValidFeedback | None = None  # None: refused, see ``rejection``
    rejection: str | None = None


def json_lines(
    file: str | os.PathLike[str] | BinaryIO, limits: ImportLimits = ImportLimits()
) -> Iterator[FileLine]:
    """Each non-blank line's JSON object (``row``), or why the line holds none (``rejection``).

    Raises what ``read_lines`` raises for the whole file (a broken gzip stream, ``limits``).
    """
    for number, text in read_lines(file, limits):
        if text is None:
            yield FileLine(number, rejection="not UTF-8 text")
            continue
        if not text.strip():
            continue  # blank lines (a trailing newline, say) are not rows
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            yield FileLine(number, rejection=f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(row, dict):
            yield FileLine(number, rejection="not a JSON object")
            continue
        yield FileLine(number, row=row)


class PreferenceFile:
    """A JSONL file of Vertex or TRL preference rows, gzip or plain, read as new feedback.

    Iterating yields a ``FileLine`` per non-blank line, in order, each with its validated record
    or its rejection; ``format`` is the file's format once known (given, or detected from its
    first JSON object). Iterating raises InvalidRequest for a problem with the whole file (no
    format can be told, no JSON object line, a broken gzip stream) and TooLarge past ``limits``.

    ``use_case``, ``labeler`` and ``source`` are stamped on every record; with an
    ``idempotency_key``, line N's record gets the key ``"<key>:<N>"``.
    """

    def __init__(
        self,
        file: str | os.PathLike[str] | BinaryIO,
        *,
        use_case: str,
        fmt: FeedbackFormat | None = None,
        labeler: str | None = None,
        source: FeedbackSource | str = FeedbackSource.HUMAN,
        idempotency_key: str | None = None,
        limits: ImportLimits = ImportLimits(),
    ):
        if fmt is not None and fmt not in FIELD_NAMES:
            raise InvalidRequest(f"format must be 'vertex' or 'trl', got {fmt!r}", param="format")
        self.file = file
        self.format = fmt
        self.limits = limits
        self._use_case = use_case
        self._labeler = labeler
        self._source = source
        self._idempotency_key = idempotency_key

    def __iter__(self) -> Iterator[FileLine]:
        for line in json_lines(self.file, self.limits):
            if line.row is None:
                yield line
                continue
            if self.format is None:
                self.format = detect_format(line.row)
                if self.format is None:
                    raise InvalidRequest(
                        f"line {line.number}: cannot tell the format; expected Vertex fields "
                        "(input_text, candidate_0, candidate_1, choice) or TRL fields (prompt, "
                        "chosen, rejected)",
                        param="format",
                    )
            key = self._idempotency_key
            try:
                record = parse_record(
                    self.format,
                    line.row,
                    use_case=self._use_case,
                    labeler=self._labeler,
                    source=self._source,
                    idempotency_key=None if key is None else f"{key}:{line.number}",
                )
                line = replace(line, feedback=record)
            except InvalidRequest as exc:
                line = replace(line, rejection=str(exc))
            yield line
        if self.format is None:
            raise InvalidRequest("file: holds no JSON object lines", param="file")


def parse_record(
    fmt: FeedbackFormat,
    row: dict[str, Any],
    *,
    use_case: str,
    labeler: str | None = None,
    source: FeedbackSource | str = FeedbackSource.HUMAN,
    idempotency_key: str | None = None,
) -> ValidFeedback:
    """One JSON object of a ``fmt`` file as a valid record; InvalidRequest names the file's
    field (``candidate_0``, ``chosen``) that is wrong."""
    new = parse_row(
        fmt,
        row,
        use_case=use_case,
        labeler=labeler,
        source=source,
        idempotency_key=idempotency_key,
    )
    return validate_feedback(new, names=FIELD_NAMES[fmt])
