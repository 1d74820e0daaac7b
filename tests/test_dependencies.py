"""pyproject.toml states true bounds: the environment the tests run in satisfies every one, and
the bounds admit no release the code is known not to work with."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(line) for line in listed]


def test_every_dependency_has_a_lower_bound_the_tested_environment_satisfies():
    for requirement in _requirements():
        assert any(spec.operator == ">=" for spec in requirement.specifier), requirement
        installed = Version(version(requirement.name))
        assert requirement.specifier.contains(installed, prereleases=True), (
            f"{requirement.name} {installed} is installed, but pyproject.toml says {requirement}"
        )


def test_transformers_bound_excludes_releases_before_the_cache_layers_the_engine_uses():
    (transformers,) = [r for r in _requirements() if r.name == "transformers"]
    assert not transformers.specifier.contains("4.46.0")
    assert not transformers.specifier.contains("5.0.0")
