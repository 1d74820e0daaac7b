"""Training data: preference pairs and prompts, from feedback snapshots or JSONL files.

The one place that knows where training data comes from. A source is one of:

    snapshot:ID        an existing feedback snapshot of the store (core.store)
    feedback:USE_CASE  a new snapshot of the use case's current feedback, taken now
    PATH               a JSONL file, plain or .gz

File rows, detected per row:

    Vertex RLHF   {"input_text", "candidate_0", "candidate_1", "choice": 0 | 1}  (ties skipped)
    TRL explicit  {"prompt", "chosen", "rejected"}
    TRL implicit  {"chosen", "rejected"}  whole dialogues sharing a prompt (hh-rlhf): the
                  prompt is their shared prefix up to its last "\\n\\nAssistant:" (split
                  exactly as the feedback importer does)
    prompts       {"prompt"} or {"input_text"}, or any preference row (its prompt is used),
                  or a .txt file with one prompt per line

An optional numeric ``margin`` on a preference row feeds the reward model's margin loss.
Every dataset carries a sha256 for the version's lineage: of the file's bytes, or the
snapshot's content hash (with its id).
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.hashing import sha256_file
from core.settings import Settings
from core.store.formats import implicit_prompt

T = TypeVar("T")


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


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, line


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in _read_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: each line must be a JSON object")
        yield number, row


def _string(row: dict[str, Any], key: str, where: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def parse_preference(row: dict[str, Any], where: str) -> tuple[PreferencePair | None, str]:
    """One row -> (pair or None for a tie, format name)."""
    margin = float(row.get("margin", 0.0) or 0.0)
    if {"input_text", "candidate_0", "candidate_1", "choice"} <= row.keys():
        choice = row["choice"]
        if choice not in (0, 1):
            return None, "vertex"  # a tie or an abstention teaches a pairwise model nothing
        candidates = (_string(row, "candidate_0", where), _string(row, "candidate_1", where))
        return PreferencePair(
            _string(row, "input_text", where), candidates[choice], candidates[1 - choice], margin
        ), "vertex"
    if {"prompt", "chosen", "rejected"} <= row.keys():
        return PreferencePair(
            _string(row, "prompt", where),
            _string(row, "chosen", where),
            _string(row, "rejected", where),
            margin,
        ), "trl"
    if {"chosen", "rejected"} <= row.keys():
        try:
            prompt, chosen, rejected = implicit_prompt(row["chosen"], row["rejected"])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        return PreferencePair(prompt, chosen, rejected, margin), "trl-implicit"
    raise ValueError(
        f"{where}: a preference row needs Vertex fields (input_text, candidate_0, candidate_1, "
        f"choice) or TRL fields (prompt, chosen, rejected); found {sorted(row)}"
    )


def load_preferences(source: str | Path, settings: Settings | None = None) -> Dataset:
    """Preference pairs from a snapshot or a JSONL file; ties are skipped. ValueError names
    the bad line."""
    if str(source).startswith("snapshot:"):
        return _snapshot(str(source), settings)
    path = _resolve(source)
    pairs: list[PreferencePair] = []
    formats: set[str] = set()
    for number, row in _rows(path):
        pair, fmt = parse_preference(row, f"{path}:{number}")
        formats.add(fmt)
        if pair is not None:
            pairs.append(pair)
    if not pairs:
        raise ValueError(f"{path}: no usable preference pairs (empty file, or only ties)")
    return Dataset(str(path), sha256_file(path), "+".join(sorted(formats)), pairs=tuple(pairs))


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
        prompts = [line.rstrip("\n") for _, line in _read_lines(path)]
        return Dataset(str(path), sha256_file(path), "text", prompts=tuple(prompts))
    prompts = []
    for number, row in _rows(path):
        where = f"{path}:{number}"
        if "prompt" in row:
            prompts.append(_string(row, "prompt", where))
        elif "input_text" in row:
            prompts.append(_string(row, "input_text", where))
        else:
            pair, _ = parse_preference(row, where)
            if pair is not None:
                prompts.append(pair.prompt)
    if not prompts:
        raise ValueError(f"{path}: no prompts found")
    return Dataset(str(path), sha256_file(path), "prompts", prompts=tuple(prompts))


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
