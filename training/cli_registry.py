"""`python -m training register` and `python -m training registry list`: the registry from a shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.base.folders import base_model_info
from core.errors import LoraloopError
from core.registry import Registry, open_registry
from core.settings import Settings


def _open(settings: Settings | None = None) -> Registry:
    settings = settings or Settings()
    return open_registry(settings, base_model_info(settings))


def add_register_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "register", help="publish a PEFT adapter folder as the next version of an adapter"
    )
    parser.add_argument("path", type=Path, help="folder with adapter_config.json + adapter_model.safetensors")
    parser.add_argument("--adapter", required=True, help="adapter (use case) name, e.g. summarize")
    parser.add_argument("--kind", choices=["policy", "reward"], default="policy")
    parser.add_argument("--alias", action="append", default=[], help="point this alias at the new version (repeatable)")
    parser.add_argument("--created-by", default=None)


def register_command(args: argparse.Namespace) -> int:
    try:
        registry = _open()
        manifest = registry.publish(args.path, args.adapter, args.kind, created_by=args.created_by)
        for alias in args.alias:
            registry.set_alias(manifest.adapter, alias, manifest.version)
    except LoraloopError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(manifest.ref)
    return 0


def add_registry_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("registry", help="inspect the artifact registry")
    actions = parser.add_subparsers(dest="registry_action", required=True)
    actions.add_parser("list", help="adapters with their versions and aliases")


def registry_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    try:
        registry = _open()
        table = Table("adapter", "kind", "versions", "aliases")
        for adapter in registry.list_adapters():
            versions = registry.list_versions(adapter)
            if not versions:
                continue
            kind = registry.manifest(adapter, versions[-1]).kind
            aliases = ", ".join(f"{a}={v}" for a, v in sorted(registry.aliases(adapter).items()))
            table.add_row(adapter, kind, ", ".join(map(str, versions)), aliases or "-")
    except LoraloopError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    Console(width=120).print(table)
    return 0
