"""This worktree's clients/python, put first on sys.path when imported (an editable install of
loraloop_client may point at another checkout). tests/clients/conftest.py imports it before
any test module imports the client."""

from __future__ import annotations

import sys
from pathlib import Path

CLIENT_SRC = Path(__file__).resolve().parents[2] / "clients" / "python"
sys.path.insert(0, str(CLIENT_SRC))
