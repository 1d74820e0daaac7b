"""Training data: preference pairs and prompts, from feedback snapshots or JSONL files.

The one place that knows where training data comes from. A source is one of:

    snapshot:ID        an existing feedback snapshot of the store (core.store)
    feedback:USE_CASE  a new snapshot of the use case's current feedback, taken now
    PATH               a JSONL file, plain or gzip (told by its magic bytes)

A preference file is read by ``core.store.preference_file``, the reader of ``feedback import``:
a file the import takes in full trains on exactly the pairs a snapshot of it would hold, and a
line the import refuses makes training refuse the file, with the import's reason
(``PATH:LINE: reason``). Its rows are, by the file's first row:

    Vertex RLHF   {"input_text", "candidate_0", "candidate_1", "choice": 0 | 1 | "tie"}
                  (ties skipped: they teach a pairwise model nothing)
    TRL           {"prompt", "chosen", "rejected"}, or {"chosen", "rejected"}: whole dialogues
                  sharing a prompt (hh-rlhf), split at their last shared "\\n\\nAssistant:"

An optional numeric ``margin`` on a preference row (kept in its metadata by the import) feeds
the reward model's margin loss; only files carry it, snapshots train with margin 0.

A prompt file holds {"prompt"} or {"input_text"} rows, or preference rows (their prompt is
used), or is a .txt file with one prompt per line.

Every dataset carries a sha256 for the version's lineage: of the file's bytes, or the
snapshot's content hash (with its id).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.errors import InvalidRequest, TooLarge
from core.hashing import sha256_file
from core.settings import Settings
from core.store.formats import ImportLimits, detect_format, read_lines
from core.store.preference_file import FileLine, PreferenceFile, json_lines, parse_record
from core.store.records import TIE
from core.store.validation import ValidFeedback, check_text
from core.text_limits import MAX_PROMPT_CHARS

T = TypeVar("T")

# A file is read as ``feedback import`` would read it into some use case; which one changes
# nothing in how its rows are read or checked.
_FILE_USE_CASE = "file"


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0


@dataclass(frozen=True)
class Dataset:
    """Rows plus where they came from (recorded in lineage)."""

    source: str
    sha256: str
    format: str
    pairs: tuple[PreferencePair, ...] = ()
    prompts: tuple[str, ...] = ()
    snapshot_id: str | None = None

    def lineage(self) -> dict[str, Any]:
        out = {
            "source": self.source,
            "sha256": self.sha256,
            "format": self.format,
            "rows": len(self.pairs) or len(self.prompts),
        }
        if self.snapshot_id:
            out["snapshot_id"] = self.snapshot_id
        return out


def freeze_source(source: str, settings: Settings | None = None) -> str:
    """``feedback:USE_CASE`` -> ``snapshot:ID`` of a snapshot taken now; others unchanged.

    Called once per run (by the main process), so every process trains on the same rows.
    """
    if not source.startswith("feedback:"):
        return source
    from core.store import Store

    with Store.from_settings(settings or Settings()) as store:
        return f"snapshot:{store.snapshots.create(source.removeprefix('feedback:')).id}"


def _snapshot(source: str, settings: Settings | None) -> Dataset:
    from core.store import Store

    snapshot_id = source.removeprefix("snapshot:")
    with Store.from_settings(settings or Settings()) as store:
        snapshot = store.snapshots.get(snapshot_id)
        rows = store.snapshots.rows(snapshot_id)  # verifies the snapshot's sha256
    pairs = tuple(PreferencePair(r["prompt"], r["chosen"], r["rejected"]) for r in rows)
    return Dataset(
        source,
        snapshot.sha256,
        f"snapshot:{snapshot.use_case}",
        pairs=pairs,
        snapshot_id=snapshot.id,
    )


def _resolve(source: str | Path) -> Path:
    text = str(source)
    if text.startswith("feedback:"):
        raise ValueError(f"{text}: take the snapshot first with freeze_source()")
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(
            f"data {text!r} is not a file; pass a .jsonl/.jsonl.gz file, snapshot:ID or "
            "feedback:USE_CASE"
        )
    return path


def _limits(settings: Settings | None) -> ImportLimits:
    """The bounds ``feedback import`` puts on a local file (lines are streamed)."""
    if settings is None:
        return ImportLimits()
    return ImportLimits(max_line_bytes=settings.max_import_line_bytes)


def _read(path: Path, lines: Iterator[FileLine]) -> Iterator[FileLine]:
    """``lines`` of ``path``; a refused line or a problem with the whole file is a ValueError
    that says where, with the import's reason."""
    try:
        for line in lines:
            if line.rejection is not None:
                raise ValueError(f"{path}:{line.number}: {line.rejection}")
            yield line
    except (InvalidRequest, TooLarge) as e:
        raise ValueError(f"{path}: {e}") from None


def _pair(record: ValidFeedback, where: str) -> PreferencePair:
    """The record's (prompt, chosen, rejected) and its margin; not for a tie."""
    margin = record.metadata.get("margin") or 0.0
    if isinstance(margin, bool) or not isinstance(margin, int | float):
        raise ValueError(f"{where}: margin must be a number, got {margin!r}")
    chosen = record.candidates[record.choice]
    rejected = record.candidates[1 - record.choice]
    return PreferencePair(record.prompt, chosen, rejected, float(margin))


def _format_name(line: FileLine, fmt: str) -> str:
    """The row's format for lineage: vertex, trl, or trl-implicit (a TRL row whose prompt
    came from its dialogues)."""
    assert line.row is not None
    return "trl-implicit" if fmt == "trl" and "prompt" not in line.row else fmt


def load_preferences(source: str | Path, settings: Settings | None = None) -> Dataset:
    """Preference pairs from a snapshot or a JSONL file; ties are skipped. ValueError names
    the bad line."""
    if str(source).startswith("snapshot:"):
        return _snapshot(str(source), settings)
    path = _resolve(source)
    file = PreferenceFile(path, use_case=_FILE_USE_CASE, limits=_limits(settings))
    pairs: list[PreferencePair] = []
    formats: set[str] = set()
    for line in _read(path, iter(file)):
        assert line.feedback is not None and file.format is not None
        formats.add(_format_name(line, file.format))
        if line.feedback.choice != TIE:
            pairs.append(_pair(line.feedback, f"{path}:{line.number}"))
    if not pairs:
        raise ValueError(f"{path}: no usable preference pairs (only ties)")
    return Dataset(str(path), sha256_file(path), "+".join(sorted(formats)), pairs=tuple(pairs))


def _prompt(row: dict[str, Any], where: str) -> str:
    """A prompt row's prompt, or the prompt of a preference row as the import reads it."""
    try:
        for field in ("prompt", "input_text"):
            if field in row:
                return check_text(row[field], field, MAX_PROMPT_CHARS)
        fmt = detect_format(row)
        if fmt is None:
            raise InvalidRequest(
                "a prompt row needs a prompt or input_text field, or the fields of a "
                f"preference row (Vertex or TRL); found {sorted(row)}"
            )
        return parse_record(fmt, row, use_case=_FILE_USE_CASE).prompt
    except InvalidRequest as e:
        raise ValueError(f"{where}: {e}") from None


def load_prompts(source: str | Path, settings: Settings | None = None) -> Dataset:
    """Prompts from a snapshot (its pairs' prompts), JSONL (prompt / input_text / preference
    rows) or a .txt file."""
    if str(source).startswith("snapshot:"):
        data = _snapshot(str(source), settings)
        return Dataset(
            data.source,
            data.sha256,
            data.format,
            prompts=tuple(p.prompt for p in data.pairs),
            snapshot_id=data.snapshot_id,
        )
    path = _resolve(source)
    if path.suffix == ".txt":
        prompts = list(_text_lines(path, _limits(settings)))
        return Dataset(str(path), sha256_file(path), "text", prompts=tuple(prompts))
    prompts = []
    for line in _read(path, json_lines(path, _limits(settings))):
        assert line.row is not None
        prompts.append(_prompt(line.row, f"{path}:{line.number}"))
    if not prompts:
        raise ValueError(f"{path}: no prompts found")
    return Dataset(str(path), sha256_file(path), "prompts", prompts=tuple(prompts))


def _text_lines(path: Path, limits: ImportLimits) -> Iterator[str]:
    """The non-blank lines of a text file, gzip or plain, without their line ends."""
    try:
        for number, text in read_lines(path, limits):
            if text is None:
                raise ValueError(f"{path}:{number}: not UTF-8 text")
            if text.strip():
                yield text.rstrip("\r\n")
    except (InvalidRequest, TooLarge) as e:
        raise ValueError(f"{path}: {e}") from None


def split_holdout(items: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """A seeded shuffle split into (train, held out); both non-empty when len(items) >= 2."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"eval_fraction must be between 0 and 1 (exclusive), got {fraction}")
    if len(items) < 2:
        raise ValueError(f"need at least 2 rows to hold some out, got {len(items)}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(len(items) * fraction)), len(items) - 1)
    held_out = [items[i] for i in order[:n_eval]]
    train = [items[i] for i in order[n_eval:]]
    return train, held_out


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path
