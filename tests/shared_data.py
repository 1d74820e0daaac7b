"""The real data the tests read from outside the repository: ``../shared/data`` beside it.

One fixture finds it; missing data fails the test with one message saying where it was looked
for and how to provide it (never a skip: CI must run these tests). ``LORALOOP_TEST_SHARED_DATA``
names another folder, for a checkout that does not sit beside ``shared/`` (a git worktree).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["HH_RLHF_TEST", "hh_rlhf", "shared_data_dir"]

HH_RLHF_TEST = "hh-rlhf-harmless-base/test.jsonl.gz"


def shared_data_dir() -> Path:
    """Where the shared data should be: the environment's choice, else ``../shared/data``."""
    # Tests may read the environment (the app may not).
    override = os.environ.get("LORALOOP_TEST_SHARED_DATA")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def hh_rlhf() -> Path:
    """Anthropic's hh-rlhf harmless-base test split: 2,312 gzip JSON lines (chosen, rejected)."""
    path = shared_data_dir() / HH_RLHF_TEST
    if not path.is_file():
        pytest.fail(
            f"test data missing: {path} is not a file. The tests read {HH_RLHF_TEST} from "
            "shared/data beside the repository (../shared/data); put it there, or set "
            "LORALOOP_TEST_SHARED_DATA to the folder that holds it.",
            pytrace=False,
        )
    return path
