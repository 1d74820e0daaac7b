"""Adapter references: ``name``, ``name@alias`` and ``name@N``, checked before any use.

Names and aliases end up in filesystem paths and S3 keys, so nothing from a request reaches
storage without passing ``validate_name`` / ``validate_alias`` here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import InvalidName

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# Aliases start with a letter so that ``name@3`` is always a version, never an alias.
ALIAS_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,62}")
DEFAULT_ALIAS = "production"
VERSION_PATTERN = re.compile(r"[0-9]+")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid adapter name, else raise InvalidName saying why."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidName(
            f"invalid adapter name {name!r}: use 1-63 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit",
            param="adapter",
        )
    return name


def validate_alias(alias: str) -> str:
    """Return ``alias`` if valid, else raise InvalidName saying why."""
    if not isinstance(alias, str) or not ALIAS_PATTERN.fullmatch(alias):
        raise InvalidName(
            f"invalid alias {alias!r}: use 1-63 characters of a-z, 0-9 and '-', "
            "starting with a letter",
            param="alias",
        )
    return alias


@dataclass(frozen=True)
class AdapterRef:
    """A parsed reference: exactly one of ``version`` and ``alias`` is set."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.version if self.version is not None else self.alias}"


def parse_ref(ref: str, param: str | None = None) -> AdapterRef:
    """Parse ``name``, ``name@alias`` or ``name@N`` (N >= 1); a bare name means @production.
    ``param`` names the request field ``ref`` came from, for the error (InvalidName)."""
    try:
        return _parse_ref(ref)
    except InvalidName as e:
        if param is not None:
            e.param = param
        raise


def _parse_ref(ref: str) -> AdapterRef:
    if not isinstance(ref, str):
        raise InvalidName(f"adapter reference must be a string, got {type(ref).__name__}")
    name, sep, selector = ref.partition("@")
    validate_name(name)
    if not sep:
        return AdapterRef(name, alias=DEFAULT_ALIAS)
    # ASCII digits only: str.isdigit() also accepts '²' or '٣', which int() refuses.
    if VERSION_PATTERN.fullmatch(selector):
        version = int(selector)
        if version < 1 or len(selector) > 9:
            raise InvalidName(
                f"invalid version in {ref!r}: versions are numbered from 1", param="version"
            )
        return AdapterRef(name, version=version)
    return AdapterRef(name, alias=validate_alias(selector))
