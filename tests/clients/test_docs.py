"""docs/clients.md runs as written against a live server: every ```python block in order in
one namespace and every ```bash block in a shell, with LORALOOP_BASE_URL / LORALOOP_API_KEY
set as the page says. The server runs its local job worker for the jobs examples."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import Settings
from tests.adapters import make_adapter
from tests.api_keys import ADMIN_KEY
from tests.clients.client_src import CLIENT_SRC
from tests.jobs import with_worker

DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"


@pytest.fixture(scope="module")
def server_settings(server_settings: Settings) -> Settings:
    return with_worker(server_settings)


def test_the_documented_examples_run_as_written(base_url, server_settings, tmp_path, monkeypatch):
    blocks = re.findall(r"```(python|bash)\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == len(re.findall(r"```(?:python|bash)", DOC.read_text())), "a block would not run"
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
    assert namespace["client"].adapters.get("summarize").aliases["production"] == 4  # 2: publish, 3: the DPO job, 4: CLI push
    assert Path("summarize.jsonl").read_text().count("\n") >= 2
    assert namespace["final"].state == "succeeded"
