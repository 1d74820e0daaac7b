"""`python -m training register` and `registry list` from a shell."""

from __future__ import annotations

import subprocess
import sys

from tests.settings_variants import settings_env


def run(args: list[str], settings) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_register_prints_the_new_version_and_list_shows_it(settings, adapter_dir, reward_dir):
    first = run(["register", str(adapter_dir), "--adapter", "summarize", "--alias", "production"], settings)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "summarize@1"
    second = run(["register", str(reward_dir), "--adapter", "helpful-rm", "--kind", "reward"], settings)
    assert second.stdout.strip() == "helpful-rm@1"
    listing = run(["registry", "list"], settings)
    assert listing.returncode == 0, listing.stderr
    assert "summarize" in listing.stdout and "production=1" in listing.stdout
    assert "helpful-rm" in listing.stdout and "reward" in listing.stdout


def test_register_explains_a_refusal(settings, tmp_path):
    result = run(["register", str(tmp_path), "--adapter", "../x"], settings)
    assert result.returncode == 1
    assert "invalid adapter name '../x'" in result.stderr
