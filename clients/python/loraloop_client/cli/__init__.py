"""The ``loraloop`` command line: adapters, feedback, jobs, generate and chat against a
loraloop server. Exit codes: 0 success, 1 failure (an API error, a failed job), 2 usage."""

from __future__ import annotations

import sys
from typing import Any

import click

from loraloop_client._exceptions import LoraloopError
from loraloop_client._version import __version__
from loraloop_client.cli._common import CliState, json_option
from loraloop_client.cli.adapters import adapters
from loraloop_client.cli.feedback import feedback
from loraloop_client.cli.generate import chat, generate
from loraloop_client.cli.jobs import jobs

FAILURES = (LoraloopError, ValueError, TimeoutError, ImportError, OSError)


class LoraloopGroup(click.Group):
    """Turns API errors into one line on stderr and exit code 1 (click keeps 2 for usage)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FAILURES as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(1)


@click.group(cls=LoraloopGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--base-url", help="The server [default: $LORALOOP_BASE_URL, else http://127.0.0.1:8000].")
@click.option("--api-key", help="The bearer key [default: $LORALOOP_API_KEY].")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per request.")
@json_option
@click.version_option(__version__, prog_name="loraloop")
@click.pass_context
def cli(ctx: click.Context, base_url: str | None, api_key: str | None, timeout: float) -> None:
    """Talk to a loraloop server: adapters, feedback, training jobs, generation."""
    state = ctx.ensure_object(CliState)
    state.base_url, state.api_key, state.timeout = base_url, api_key, timeout


for command in (adapters, feedback, jobs, generate, chat):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="loraloop")


if __name__ == "__main__":
    sys.exit(main())
