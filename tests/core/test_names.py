"""References parse once into values: AdapterVersion (name@N), AdapterAlias (name@alias), None (base)."""

from __future__ import annotations

import pytest

from core.errors import InvalidName
from core.names import (
    AdapterAlias,
    AdapterVersion,
    model_name,
    parse_model,
    parse_ref,
    parse_version,
)


def test_a_reference_parses_into_a_version_or_an_alias():
    assert parse_ref("summarize@3") == AdapterVersion("summarize", 3)
    assert parse_ref("summarize@candidate") == AdapterAlias("summarize", "candidate")
    assert parse_ref("summarize") == AdapterAlias("summarize", "production")  # the default alias
    assert str(parse_ref("summarize@3")) == "summarize@3"
    assert str(parse_ref("summarize")) == "summarize@production"


def test_a_version_is_a_value_usable_as_a_key():
    assert AdapterVersion("a", 1) == AdapterVersion("a", 1)
    assert {AdapterVersion("a", 1): "x"}[AdapterVersion("a", 1)] == "x"
    assert sorted([AdapterVersion("b", 1), AdapterVersion("a", 2), AdapterVersion("a", 1)]) == [
        AdapterVersion("a", 1), AdapterVersion("a", 2), AdapterVersion("b", 1),
    ]
    assert AdapterVersion("a", 1) != AdapterAlias("a", "1")


def test_the_model_field_names_the_base_model_as_base_or_by_its_id():
    assert parse_model("base") is None
    assert parse_model("tiny-llama", base_model_id="tiny-llama") is None
    assert parse_model("tiny-llama") == AdapterAlias("tiny-llama", "production")  # no base id given
    assert parse_model("demo@2", base_model_id="tiny-llama") == AdapterVersion("demo", 2)
    assert model_name(None) == "base" and model_name(AdapterVersion("demo", 2)) == "demo@2"


def test_a_fixed_version_is_refused_when_an_alias_is_given():
    assert parse_version("qa@2") == AdapterVersion("qa", 2)
    assert parse_version("base") is None
    with pytest.raises(InvalidName, match="not a version") as e:
        parse_version("qa@production", param="a")
    assert e.value.param == "a"


@pytest.mark.parametrize("bad", ["../etc", "a/b", "UPPER", "x" * 100, "qa@0", "qa@Prod", "qa@²", ""])
def test_bad_references_are_refused_naming_the_field(bad):
    with pytest.raises(InvalidName) as e:
        parse_model(bad, param="model")
    assert e.value.param == "model"
