"""A model name fixed to the version it names now (shared by the labeling and ui features).

A labeling pair and a dashboard comparison name versions, not aliases: an alias moves (a
promotion), and the pair must keep showing what was compared."""

from __future__ import annotations

from core.errors import InvalidRequest
from core.names import AdapterVersion, parse_model
from core.registry import Registry


def fixed_version(registry: Registry, ref: str, param: str) -> AdapterVersion | None:
    """The version of 'name@N', or of an alias as the registry resolves it now; None for 'base'."""
    parsed = parse_model(ref)
    if parsed is None or isinstance(parsed, AdapterVersion):
        return parsed
    aliases = registry.aliases(parsed.adapter)
    if parsed.alias not in aliases:
        raise InvalidRequest(f"{param}: {parsed.adapter} has no alias {parsed.alias!r}", param=param)
    return AdapterVersion(parsed.adapter, aliases[parsed.alias])
