"""``loraloop generate`` and ``loraloop chat``: through the openai package (the optional
``openai`` extra), streaming tokens to the terminal as they come."""

from __future__ import annotations

import sys
from typing import Any

import click

from loraloop_client.cli._common import CliState, emit_json, json_option, pass_state


def _sampling(max_tokens: int, temperature: float | None, seed: int | None) -> dict[str, Any]:
    args: dict[str, Any] = {"max_tokens": max_tokens}
    if temperature is not None:
        args["temperature"] = temperature
    if seed is not None:
        args["seed"] = seed
    return args


sampling_options = [
    click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True),
    click.option("--temperature", type=click.FloatRange(0, 2), help="0 for greedy."),
    click.option("--seed", type=int),
]


def with_sampling(command):  # type: ignore[no-untyped-def]
    for option in reversed(sampling_options):
        command = option(command)
    return command


@click.command()
@click.argument("model")
@click.argument("prompt")
@with_sampling
@json_option
@pass_state
def generate(state: CliState, model: str, prompt: str, max_tokens: int, temperature: float | None, seed: int | None) -> None:
    """Complete PROMPT with MODEL (base, name, name@alias or name@N)."""
    oai = state.client().openai()
    args = _sampling(max_tokens, temperature, seed)
    if state.json:
        return emit_json(oai.completions.create(model=model, prompt=prompt, **args))
    for chunk in oai.completions.create(model=model, prompt=prompt, stream=True, **args):
        if chunk.choices:
            sys.stdout.write(chunk.choices[0].text)
            sys.stdout.flush()
    sys.stdout.write("\n")


def _reply(state: CliState, model: str, messages: list[dict[str, str]], args: dict[str, Any]) -> str:
    """Stream one assistant reply to stdout (or print it as JSON); returns its text."""
    oai = state.client().openai()
    if state.json:
        completion = oai.chat.completions.create(model=model, messages=messages, **args)
        emit_json(completion)
        return completion.choices[0].message.content or ""
    parts: list[str] = []
    for chunk in oai.chat.completions.create(model=model, messages=messages, stream=True, **args):
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            parts.append(text)
            sys.stdout.write(text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(parts)


@click.command()
@click.argument("model")
@click.argument("message", required=False)
@click.option("--system", help="A system message.")
@with_sampling
@json_option
@pass_state
def chat(
    state: CliState, model: str, message: str | None, system: str | None, max_tokens: int,
    temperature: float | None, seed: int | None,
) -> None:
    """Chat with MODEL: one MESSAGE, or a conversation read line by line from stdin (end
    with Ctrl-D)."""
    messages = [{"role": "system", "content": system}] if system else []
    args = _sampling(max_tokens, temperature, seed)
    if message is not None:
        messages.append({"role": "user", "content": message})
        _reply(state, model, messages, args)
        return
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            state.stderr.print("[bold]you>[/bold] ", end="")
        line = sys.stdin.readline()
        if not line:
            return
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.rstrip("\n")})
        messages.append({"role": "assistant", "content": _reply(state, model, messages, args)})
