"""What every command shares: the client built from global options (or the environment), the
``--json`` switch, and output: results on stdout, progress, logs and errors on stderr."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

import click
from pydantic import BaseModel
from rich.console import Console

from loraloop_client import Client


@dataclass
class CliState:
    base_url: str | None = None
    api_key: str | None = None
    timeout: float = 60.0
    json: bool = False
    stdout: Console = field(default_factory=lambda: Console(soft_wrap=True))
    stderr: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))
    _client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.base_url, self.api_key, timeout=self.timeout)
            click.get_current_context().call_on_close(self._client.close)
        return self._client


pass_state = click.make_pass_decorator(CliState, ensure=True)


def _set_json(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(CliState).json = True


json_option = click.option(
    "--json", "json_output", is_flag=True, expose_value=False, callback=_set_json, is_eager=True,
    help="Print machine-readable JSON on stdout.",
)


def plain(value: Any) -> Any:
    """JSON-ready data from models, lists of models and dicts of them."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def emit_json(value: Any) -> None:
    """One JSON document (or NDJSON line) on stdout."""
    sys.stdout.write(json.dumps(plain(value), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def parse_assignments(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``a.b=3`` pairs into a nested dict; values are JSON when they parse (3, true, [1]),
    else strings."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE, e.g. policy.train_steps=20")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return result
