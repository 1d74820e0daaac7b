"""The API keys of the test servers (tests/fixtures/http_server.py): one per scope."""

from __future__ import annotations

ADMIN_KEY = "admin-key-0123456789"
INFER_KEY = "infer-key-0123456789"
FEEDBACK_KEY = "feedback-key-0123456789"
API_KEYS = [
    {"name": "ops", "key": ADMIN_KEY, "scopes": ["admin"]},
    {"name": "app", "key": INFER_KEY, "scopes": ["infer"]},
    {"name": "labelers", "key": FEEDBACK_KEY, "scopes": ["feedback"]},
]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
