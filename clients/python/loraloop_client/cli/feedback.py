"""``loraloop feedback post|import|export|stats``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from loraloop_client.cli._common import CliState, emit_json, json_option, pass_state

FORMATS = click.Choice(["vertex", "trl"])


@click.group()
def feedback() -> None:
    """Post, import and export preferences; counts and win rates."""


def _choice(value: str) -> int | str:
    return value if value == "tie" else int(value)


@feedback.command("post")
@click.argument("use_case")
@click.option("--choice", type=click.Choice(["0", "1", "tie"]), required=True, help="The preferred candidate.")
@click.option("--prompt", help="The prompt both candidates answer.")
@click.option("--candidate", "candidates", multiple=True, help="A candidate text (twice).")
@click.option("--completion-id", "completion_ids", multiple=True, help="A logged completion's id (twice), instead of --prompt/--candidate.")
@click.option("--labeler", help="Who judged [default: the API key's name].")
@click.option("--source", type=click.Choice(["human", "model"]), default="human", show_default=True)
@click.option("--metadata", help="A JSON object stored with the preference.")
@click.option("--idempotency-key", help="Makes a repeated post count once.")
@json_option
@pass_state
def post(
    state: CliState, use_case: str, choice: str, prompt: str | None, candidates: tuple[str, ...],
    completion_ids: tuple[str, ...], labeler: str | None, source: str, metadata: str | None,
    idempotency_key: str | None,
) -> None:
    """Record which of two completions for USE_CASE is better."""
    if bool(completion_ids) == bool(candidates):
        raise click.UsageError("give --prompt with two --candidate, or two --completion-id")
    try:
        extra = json.loads(metadata) if metadata else None
    except ValueError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--metadata") from error
    record = state.client().feedback.post(
        use_case, _choice(choice), prompt=prompt, candidates=list(candidates) or None,  # type: ignore[arg-type]
        completion_ids=list(completion_ids) or None, labeler=labeler, source=source,  # type: ignore[arg-type]
        metadata=extra, idempotency_key=idempotency_key,
    )
    if state.json:
        return emit_json(record)
    state.stdout.print(f"feedback {record.id} for {record.use_case}: choice {record.choice}")


@feedback.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--use-case", required=True)
@click.option("--format", "format_", type=FORMATS, help="Detected when omitted.")
@click.option("--source", type=click.Choice(["human", "model"]), default="human", show_default=True)
@json_option
@pass_state
def import_(state: CliState, file: Path, use_case: str, format_: str | None, source: str) -> None:
    """Import a JSONL preference FILE (plain or gzip; Vertex or TRL rows) in one transaction."""
    report = state.client().feedback.import_file(file, use_case, format=format_, source=source)  # type: ignore[arg-type]
    if state.json:
        return emit_json(report)
    state.stdout.print(f"{report.accepted} accepted, {report.duplicates} duplicates, "
                       f"{report.rejected_count} rejected ({report.format})")
    for row in report.rejected[:20]:
        state.stderr.print(f"  line {row.line}: {row.reason}")


@feedback.command("export")
@click.option("--use-case", required=True)
@click.option("--format", "format_", type=FORMATS, default="vertex", show_default=True)
@click.option("--include-ties", is_flag=True, help="Ties too (Vertex form only).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="A file instead of stdout.")
@json_option
@pass_state
def export(state: CliState, use_case: str, format_: str, include_ties: bool, output: Path | None) -> None:
    """Write a use case's preferences as JSONL (already machine-readable, --json or not)."""
    rows = state.client().feedback.export(use_case, format=format_, include_ties=include_ties)  # type: ignore[arg-type]
    sink = output.open("w", encoding="utf-8") if output else sys.stdout
    count = 0
    try:
        for row in rows:
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    finally:
        if output:
            sink.close()
    state.stderr.print(f"{count} rows")


@feedback.command("stats")
@click.option("--use-case")
@click.option("--a", "a", help="'name@N' or 'base': head-to-head with --b.")
@click.option("--b", "b")
@json_option
@pass_state
def stats(state: CliState, use_case: str | None, a: str | None, b: str | None) -> None:
    """Counts per use case and adapter version; the win rate of --a over --b."""
    result = state.client().feedback.stats(use_case, a=a, b=b)
    if state.json:
        return emit_json(result)
    table = Table("use case", "feedback", "choice 0", "choice 1", "ties", "human", "model")
    for row in result.use_cases:
        table.add_row(row.use_case, *(str(n) for n in (row.feedback, row.choice_0, row.choice_1, row.ties, row.human, row.model)))
    state.stdout.print(table)
    if result.versions:
        versions = Table("version", "candidates", "wins", "losses", "ties")
        for v in result.versions:
            versions.add_row(v.version, str(v.candidates), str(v.wins), str(v.losses), str(v.ties))
        state.stdout.print(versions)
    if result.head_to_head:
        h = result.head_to_head
        rate = "n/a" if h.win_rate is None else f"{h.win_rate:.1%}"
        state.stdout.print(f"{h.a} vs {h.b}: win rate {rate} ({h.wins} wins, {h.losses} losses, {h.ties} ties)")
