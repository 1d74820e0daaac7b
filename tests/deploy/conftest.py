"""helm for the chart tests: fetched once by ../shared/tools/get-helm (tests/deploy/helm_tool.py)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.deploy.helm_tool import ROOT, get_helm_script


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The helm binary; the tests fail (never skip) when it cannot be had."""
    script = get_helm_script()
    if script is None:
        found = shutil.which("helm")
        assert found, (
            f"helm is missing: put the shared tools beside the repository ({ROOT.parent}/shared/"
            "tools/get-helm) or helm on PATH"
        )
        return found
    # Cached in the project's virtualenv when there is one, so CI fetches it once.
    venv = ROOT / ".venv"
    dest = venv / "tools" if venv.is_dir() else tmp_path_factory.mktemp("tools")
    result = subprocess.run(
        [str(script), str(dest)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stderr}"
    return result.stdout.strip().splitlines()[-1]
