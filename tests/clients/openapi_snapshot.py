"""The server's OpenAPI document as the client was last checked against it.

Refresh the committed snapshot after changing the server's API (then fix the client's models
if the contract test says so):

    python -m tests.clients.openapi_snapshot
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from core.settings import Settings
from service.app import create_app

SNAPSHOT = Path(__file__).with_name("openapi.json")
REFRESH = "python -m tests.clients.openapi_snapshot"


def current_schema() -> dict[str, Any]:
    """The document the server serves at /openapi.json (it does not depend on the settings'
    paths; building the app loads no model)."""
    with tempfile.TemporaryDirectory() as data:
        return create_app(Settings(data_dir=Path(data))).openapi()


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    SNAPSHOT.write_text(render(current_schema()))
    print(f"wrote {SNAPSHOT}")
