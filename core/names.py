"""Adapter references: ``name``, ``name@alias``, ``name@N`` and ``base``, checked before any use.

A reference is parsed once, where it enters (a request field, a CLI argument), into an
``AdapterVersion`` or an ``AdapterAlias``; everything after carries those values, never the text.
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
# The OpenAI ``model`` that selects the base model alone (so does the base model's own id).
BASE_MODEL = "base"
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


@dataclass(frozen=True, slots=True, order=True)
class AdapterVersion:
    """One version of an adapter, ``name@N``: what served a completion, what the engine loads
    and caches, what the store and metrics count. The base model alone is no version: None."""

    adapter: str
    version: int

    def __str__(self) -> str:
        return f"{self.adapter}@{self.version}"


@dataclass(frozen=True, slots=True)
class AdapterAlias:
    """A movable pointer, ``name@alias``, resolved to a version through the registry."""

    adapter: str
    alias: str

    def __str__(self) -> str:
        return f"{self.adapter}@{self.alias}"


Reference = AdapterVersion | AdapterAlias
"""What a user may name: a fixed version (``name@N``) or an alias (``name@alias``, and a bare
``name``, which means ``name@production``)."""


def model_name(version: AdapterVersion | None) -> str:
    """The OpenAI ``model`` text of what served: ``name@N``, or ``base`` for the base model."""
    return BASE_MODEL if version is None else str(version)


def parse_ref(ref: str, param: str | None = None) -> Reference:
    """Parse ``name``, ``name@alias`` or ``name@N`` (N >= 1); a bare name means @production.
    ``param`` names the request field ``ref`` came from, for the error (InvalidName)."""
    try:
        return _parse_ref(ref)
    except InvalidName as e:
        if param is not None:
            e.param = param
        raise


def parse_model(
    model: str, base_model_id: str | None = None, param: str | None = None
) -> Reference | None:
    """Parse a request's ``model``: None for the base model (``base`` or ``base_model_id``),
    else the adapter reference (``parse_ref``)."""
    if model == BASE_MODEL or (base_model_id is not None and model == base_model_id):
        return None
    return parse_ref(model, param)


def parse_version(text: str, param: str | None = None) -> AdapterVersion | None:
    """Parse a fixed version, ``name@N``, or ``base`` (None); InvalidName for anything else,
    aliases included (they move: a count or a comparison names versions)."""
    if text == BASE_MODEL:
        return None
    ref = parse_ref(text, param)
    if not isinstance(ref, AdapterVersion):
        raise InvalidName(f"{text!r} is not a version: use 'name@N' or 'base'", param=param)
    return ref


def _parse_ref(ref: str) -> Reference:
    if not isinstance(ref, str):
        raise InvalidName(f"adapter reference must be a string, got {type(ref).__name__}")
    name, sep, selector = ref.partition("@")
    validate_name(name)
    if not sep:
        return AdapterAlias(name, DEFAULT_ALIAS)
    # ASCII digits only: str.isdigit() also accepts '²' or '٣', which int() refuses.
    if VERSION_PATTERN.fullmatch(selector):
        version = int(selector)
        if version < 1 or len(selector) > 9:
            raise InvalidName(
                f"invalid version in {ref!r}: versions are numbered from 1", param="version"
            )
        return AdapterVersion(name, version)
    return AdapterAlias(name, validate_alias(selector))
