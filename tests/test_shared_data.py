"""Tests that need ../shared/data fail, with one message saying how to fix it, when it is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_missing_shared_data_fails_with_one_clear_message_instead_of_skipping(tmp_path) -> None:
    env = {**os.environ, "LORALOOP_TEST_SHARED_DATA": str(tmp_path / "nowhere")}
    test = "tests/training/test_data.py::test_reads_the_real_hh_rlhf_file"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode != 0, run.stdout
    assert "skipped" not in run.stdout
    assert f"test data missing: {tmp_path / 'nowhere'}/hh-rlhf-harmless-base/test.jsonl.gz" in run.stdout
    assert "LORALOOP_TEST_SHARED_DATA" in run.stdout
