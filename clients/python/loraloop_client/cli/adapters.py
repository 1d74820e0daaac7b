"""``loraloop adapters ls|show|push|promote|load|pin|unload``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from loraloop_client.cli._common import CliState, emit_json, json_option, pass_state


@click.group()
def adapters() -> None:
    """List, publish and promote adapters; load, pin and unload them in the engine."""


@adapters.command("ls")
@json_option
@pass_state
def list_adapters(state: CliState) -> None:
    """Every adapter with its latest version and aliases."""
    found = state.client().adapters.list()
    if state.json:
        return emit_json(found)
    table = Table("name", "kind", "versions", "aliases")
    for adapter in found:
        aliases = " ".join(f"{a}→{v}" for a, v in sorted(adapter.aliases.items()))
        table.add_row(adapter.name, adapter.kind, str(len(adapter.versions)), aliases)
    state.stdout.print(table)


@adapters.command("show")
@click.argument("name")
@json_option
@pass_state
def show(state: CliState, name: str) -> None:
    """One adapter: versions, aliases, and where the engine holds them."""
    adapter = state.client().adapters.get(name)
    if state.json:
        return emit_json(adapter)
    aliases: dict[int, list[str]] = {}
    for alias, version in adapter.aliases.items():
        aliases.setdefault(version, []).append(alias)
    residency = {r.version: r for r in adapter.residency}
    table = Table("version", "rank", "alpha", "aliases", "residency", "created", title=f"{adapter.name} ({adapter.kind})")
    for v in adapter.versions:
        where = residency.get(v.version)
        tier = f"{where.tier}{' pinned' if where.pinned else ''}" if where else ""
        table.add_row(str(v.version), str(v.rank), f"{v.alpha:g}", " ".join(sorted(aliases.get(v.version, []))),
                      tier, v.created_at.strftime("%Y-%m-%d %H:%M"))
    state.stdout.print(table)


@adapters.command("push")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--alias", "-a", "aliases", multiple=True, help="Point this alias at the new version (repeatable).")
@click.option("--kind", type=click.Choice(["policy", "reward"]), default="policy", show_default=True)
@json_option
@pass_state
def push(state: CliState, name: str, path: Path, aliases: tuple[str, ...], kind: str) -> None:
    """Publish a PEFT adapter folder (or .tar.gz/.zip) as the next version of NAME."""
    version = state.client().adapters.publish(name, path, kind=kind, aliases=aliases)  # type: ignore[arg-type]
    if state.json:
        return emit_json(version)
    suffix = f" ({', '.join(aliases)})" if aliases else ""
    state.stdout.print(f"published {name}@{version.version}{suffix}")


@adapters.command("promote")
@click.argument("name")
@click.argument("target", metavar="VERSION|ALIAS")
@click.option("--alias", default="production", show_default=True, help="The alias to move.")
@click.option("--expected", type=int, help="The version the alias must point to now [default: what it points to when read].")
@json_option
@pass_state
def promote(state: CliState, name: str, target: str, alias: str, expected: int | None) -> None:
    """Point --alias (production) at VERSION, or at the version another alias names
    (`promote summarize candidate`); fails with 409 if someone moves it meanwhile."""
    client = state.client()
    adapter = client.adapters.get(name)
    version = _version_of(adapter.aliases, name, target)
    current = adapter.aliases.get(alias) if expected is None else expected
    moved = client.adapters.set_alias(name, alias, version, expected=current, expected_absent=current is None)
    if state.json:
        return emit_json(moved)
    state.stdout.print(f"{name}@{alias}: {current if current is not None else '-'} → {moved.version}")


def _version_of(aliases: dict[str, int], name: str, target: str) -> int:
    if target.isdigit() and int(target) >= 1:
        return int(target)
    if target in aliases:
        return aliases[target]
    raise click.BadParameter(f"{target!r} is neither a version number nor an alias of {name}", param_hint="VERSION|ALIAS")


@adapters.command("load")
@click.argument("ref")
@json_option
@pass_state
def load(state: CliState, ref: str) -> None:
    """Load REF (name, name@alias or name@N) into a LoRA slot ahead of traffic."""
    residency = state.client().adapters.load(ref)
    if state.json:
        return emit_json(residency)
    state.stdout.print(f"{ref}: version {residency.version} in {residency.tier}")


@adapters.command("pin")
@click.argument("ref")
@click.option("--unpin", is_flag=True, help="Release the pin instead.")
@json_option
@pass_state
def pin(state: CliState, ref: str, unpin: bool) -> None:
    """Keep REF loaded (never evicted), or --unpin it."""
    residency = state.client().adapters.pin(ref, pinned=not unpin)
    if state.json:
        return emit_json(residency)
    state.stdout.print(f"{ref}: version {residency.version} {'pinned' if residency.pinned else 'unpinned'}")


@adapters.command("unload")
@click.argument("ref")
@json_option
@pass_state
def unload(state: CliState, ref: str) -> None:
    """Drop REF from its slot and host memory (409 while requests use it)."""
    state.client().adapters.unload(ref)
    if state.json:
        return emit_json({"ref": ref, "unloaded": True})
    state.stdout.print(f"{ref}: unloaded")


