"""docs/clients.md runs as written against a live server: every ```python block in order in
one namespace and every ```bash block in a shell, with LORALOOP_BASE_URL / LORALOOP_API_KEY
set as the page says. Blocks fenced ``python no-run`` / ``bash no-run`` need the jobs API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.adapters import make_adapter
from tests.clients.conftest import CLIENT_SRC
from tests.service.http.conftest import ADMIN_KEY

DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"


def test_the_documented_examples_run_as_written(base_url, server_settings, tmp_path, monkeypatch):
    blocks = re.findall(r"```(python|bash)\n(.*?)```", DOC.read_text(), re.S)
    assert sum(lang == "python" for lang, _ in blocks) >= 8 and sum(lang == "bash" for lang, _ in blocks) >= 3
    make_adapter(Path(server_settings.base_model), tmp_path / "adapter", seed=31)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORALOOP_BASE_URL", base_url)
    monkeypatch.setenv("LORALOOP_API_KEY", ADMIN_KEY)
    bin_dir = tmp_path / "bin"  # `loraloop` as `make install` declares it, from this checkout
    bin_dir.mkdir()
    (bin_dir / "loraloop").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m loraloop_client.cli "$@"\n')
    (bin_dir / "loraloop").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(CLIENT_SRC)}

    namespace: dict = {"__name__": "__docs__"}
    for number, (lang, code) in enumerate(blocks):
        if lang == "python":
            exec(compile(code, f"{DOC.name} block {number}", "exec"), namespace)
            continue
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + code], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"block {number}:\n{code}\n{done.stderr[-3000:]}"
    assert namespace["client"].adapters.get("summarize").aliases["production"] == 3
    assert Path("summarize.jsonl").read_text().count("\n") >= 2


@pytest.mark.parametrize("fence", ["python no-run", "bash no-run"])
def test_only_the_jobs_examples_are_not_run(fence):
    skipped = re.findall(rf"```{fence}\n(.*?)```", DOC.read_text(), re.S)
    assert skipped and all("jobs" in block for block in skipped)
