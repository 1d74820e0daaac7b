"""Checks on a new feedback record, shared by ``Feedback.add`` and the JSONL importer.

Pure functions: no database. Each failure raises ``InvalidRequest`` whose ``param`` (and
message) names the offending field. Field names default to the API's (``candidates[0]``);
the importer passes the file format's names (``candidate_0``, ``chosen``) instead, so a
rejected line says which of *its* fields is wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import InvalidRequest
from core.names import NAME_PATTERN
from core.store.records import TIE, Choice, FeedbackCreate, FeedbackSource
from core.text_limits import MAX_CANDIDATE_CHARS, MAX_PROMPT_CHARS

MAX_LABELER_CHARS = 256
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_METADATA_BYTES = 65_536

_CHOICES: dict[Any, int] = {0: 0, 1: 1, "tie": TIE}


@dataclass(frozen=True, slots=True)
class ValidFeedback:
    """A feedback record that passed every check, normalised and ready to insert."""

    use_case: str
    prompt: str
    candidates: tuple[str, str]
    completion_ids: tuple[str | None, str | None]
    choice: int  # 0, 1 or TIE
    labeler: str | None
    source: FeedbackSource
    metadata: dict[str, Any]
    idempotency_key: str | None

    def body_sha256(self) -> str:
        """Hash of everything but the idempotency key: equal for a retry of the same request."""
        body = {
            "use_case": self.use_case,
            "prompt": self.prompt,
            "candidates": list(self.candidates),
            "completion_ids": list(self.completion_ids),
            "choice": self.choice,
            "labeler": self.labeler,
            "source": self.source.value,
            "metadata": self.metadata,
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def row_values(self, created_at: datetime) -> dict[str, Any]:
        """Keyword values of a ``FeedbackRow`` (attribute names)."""
        return {
            "use_case": self.use_case,
            "prompt": self.prompt,
            "candidate_0": self.candidates[0],
            "candidate_1": self.candidates[1],
            "completion_id_0": self.completion_ids[0],
            "completion_id_1": self.completion_ids[1],
            "choice": self.choice,
            "labeler": self.labeler,
            "source": self.source,
            "meta": self.metadata,
            "idempotency_key": self.idempotency_key,
            "body_sha256": self.body_sha256(),
            "created_at": created_at,
        }


def validate_feedback(
    new: FeedbackCreate,
    completions: Mapping[str, tuple[str, str]] | None = None,
    names: Mapping[str, str] | None = None,
) -> ValidFeedback:
    """Check ``new`` and return it normalised.

    ``completions`` maps each id of ``new.completion_ids`` found in the store to its
    (prompt, text); ids missing from it are reported as unknown. ``names`` renames fields in
    errors (API name -> caller's name).
    """

    def name(field: str) -> str:
        return names.get(field, field) if names else field

    use_case = check_use_case(new.use_case, name("use_case"))
    choice = parse_choice(new.choice, name("choice"))
    source = parse_source(new.source, name("source"))
    labeler = _optional_str(new.labeler, name("labeler"), MAX_LABELER_CHARS)
    key = _optional_str(new.idempotency_key, name("idempotency_key"), MAX_IDEMPOTENCY_KEY_CHARS)
    metadata = _check_metadata(new.metadata, name("metadata"))

    if new.completion_ids is not None:
        if new.prompt is not None or new.candidates is not None:
            raise InvalidRequest(
                f"give either {name('completion_ids')} or {name('prompt')} and "
                f"{name('candidates')}, not both",
                param=name("completion_ids"),
            )
        ids = _check_completion_ids(new.completion_ids, name)
        prompt, candidates = _resolve_completions(ids, completions or {}, name)
        raw_prompt: object = prompt
        fields = ("completion_ids", "completion_ids[0]", "completion_ids[1]", "completion_ids")
        completion_ids: tuple[str | None, str | None] = ids
    else:
        raw_prompt = new.prompt
        candidates = _pair(new.candidates, name("candidates"))
        fields = ("prompt", "candidates[0]", "candidates[1]", "candidates")
        completion_ids = (None, None)

    prompt = check_text(raw_prompt, name(fields[0]), MAX_PROMPT_CHARS)
    # A logged completion may be empty (the model stopped at once): it is still what the
    # model answered, and a labeler must be able to prefer the other one.
    logged = new.completion_ids is not None
    candidates = (
        check_text(candidates[0], name(fields[1]), MAX_CANDIDATE_CHARS, allow_empty=logged),
        check_text(candidates[1], name(fields[2]), MAX_CANDIDATE_CHARS, allow_empty=logged),
    )
    if candidates[0] == candidates[1]:
        raise InvalidRequest(
            f"{name(fields[3])}: the two candidates are the same text; a preference needs two "
            "different candidates",
            param=name(fields[3]),
        )
    return ValidFeedback(
        use_case=use_case,
        prompt=prompt,
        candidates=candidates,
        completion_ids=completion_ids,
        choice=choice,
        labeler=labeler,
        source=source,
        metadata=metadata,
        idempotency_key=key,
    )


def check_use_case(value: object, param: str = "use_case") -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidRequest(
            f"{param}: invalid use case {value!r}: use 1-63 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit",
            param=param,
        )
    return value


def parse_choice(value: object, param: str = "choice") -> int:
    """0 -> 0, 1 -> 1, "tie" -> TIE (-1)."""
    # bool is an int subclass: True must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int | str) or value not in _CHOICES:
        raise InvalidRequest(f'{param}: must be 0, 1 or "tie", got {value!r}', param=param)
    return _CHOICES[value]


def choice_label(stored: int) -> Choice:
    """The API form of a stored choice."""
    return "tie" if stored == TIE else 0 if stored == 0 else 1


def parse_source(value: object, param: str = "source") -> FeedbackSource:
    try:
        return FeedbackSource(str(value))  # StrEnum: str() of a member is its value
    except ValueError:
        raise InvalidRequest(
            f'{param}: must be "human" or "model", got {value!r}', param=param
        ) from None


def check_text(value: object, param: str, max_chars: int, *, allow_empty: bool = False) -> str:
    """A string of at most ``max_chars`` that PostgreSQL and SQLite can both store; non-empty
    unless ``allow_empty``.

    Whitespace counts as content and is kept verbatim: hh-rlhf replies start with a space,
    and a few chosen replies are exactly " ".
    """
    if not isinstance(value, str):
        raise InvalidRequest(f"{param}: must be a string, got {type(value).__name__}", param=param)
    if not value and not allow_empty:
        raise InvalidRequest(f"{param}: must not be empty", param=param)
    if len(value) > max_chars:
        raise InvalidRequest(
            f"{param}: {len(value)} characters is over the limit of {max_chars}", param=param
        )
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise InvalidRequest(f"{param}: must not contain NUL characters", param=param)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a "\ud800" JSON escape
        raise InvalidRequest(f"{param}: is not valid Unicode text", param=param) from None
    return value


def _optional_str(value: object, param: str, max_chars: int) -> str | None:
    if value is None:
        return None
    return check_text(value, param, max_chars)


def _check_metadata(value: object, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param}: must be a JSON object", param=param)
    try:
        # allow_nan=False: NaN is not JSON, and PostgreSQL's json type refuses it.
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{param}: not serialisable as JSON ({exc})", param=param) from None
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise InvalidRequest(
            f"{param}: over the limit of {MAX_METADATA_BYTES} bytes of JSON", param=param
        )
    copy: dict[str, Any] = json.loads(encoded)  # private: the caller cannot mutate it later
    return copy


def _pair(value: object, param: str) -> tuple[str, str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise InvalidRequest(f"{param}: must be a list of exactly two texts", param=param)
    return value[0], value[1]


def _check_completion_ids(value: object, name: Any) -> tuple[str, str]:
    param = name("completion_ids")
    first, second = _pair(value, param)
    for index, item in enumerate((first, second)):
        if not isinstance(item, str) or not item:
            raise InvalidRequest(
                f"{name(f'completion_ids[{index}]')}: must be a completion id string",
                param=name(f"completion_ids[{index}]"),
            )
    if first == second:
        raise InvalidRequest(
            f"{param}: the same completion twice; a preference needs two different completions",
            param=param,
        )
    return first, second


def _resolve_completions(
    ids: tuple[str, str], completions: Mapping[str, tuple[str, str]], name: Any
) -> tuple[str, tuple[str, str]]:
    for index, completion_id in enumerate(ids):
        if completion_id not in completions:
            param = name(f"completion_ids[{index}]")
            raise InvalidRequest(f"{param}: unknown completion id {completion_id!r}", param=param)
    (prompt_0, text_0), (prompt_1, text_1) = completions[ids[0]], completions[ids[1]]
    if prompt_0 != prompt_1:
        param = name("completion_ids")
        raise InvalidRequest(f"{param}: the two completions answer different prompts", param=param)
    return prompt_0, (text_0, text_1)
