"""Every route of the app is in docs/api.md's table of routes and scopes, and accepts exactly
the keys the table says: the doc cannot drift from the code, and a new route cannot ship
without a decision on who may call it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from core.settings import Settings
from service.app import create_app
from tests.api_keys import ADMIN_KEY, FEEDBACK_KEY, INFER_KEY, auth

API_DOC = Path(__file__).parents[3] / "docs" / "api.md"
ROW = re.compile(r"^\| `(GET|POST|PUT|DELETE) (/\S*)` \| (anyone|any key|infer|feedback|admin) \|$")
KEYS = {"infer": INFER_KEY, "feedback": FEEDBACK_KEY, "admin": ADMIN_KEY}
# Who gets in, for each entry of the table (an admin key holds every scope).
ACCEPTED = {
    "anyone": {None, "infer", "feedback", "admin"},
    "any key": {"infer", "feedback", "admin"},
    "infer": {"infer", "admin"},
    "feedback": {"feedback", "admin"},
    "admin": {"admin"},
}


def documented() -> dict[tuple[str, str], str]:
    rows = [ROW.match(line) for line in API_DOC.read_text().splitlines()]
    table = {(m[1], m[2]): m[3] for m in rows if m}
    assert len(table) > 40, "the table of routes and scopes in docs/api.md was not found"
    return table


def served(settings: Settings) -> set[tuple[str, str]]:
    routes = set()
    for route in iter_route_contexts(create_app(settings).routes):
        if isinstance(route.original_route, Mount):
            routes.add(("GET", f"{route.path}/{{path}}"))
            continue
        routes.update((method, route.path) for method in route.methods or () if method != "HEAD")
    return routes


def test_every_route_is_in_the_table_and_every_row_is_a_route(server_settings) -> None:
    routes, table = served(server_settings), set(documented())
    assert routes - table == set(), "routes missing from docs/api.md's table"
    assert table - routes == set(), "rows of docs/api.md's table that are no route"


@pytest.fixture(scope="module")
def sessions(base_url) -> dict[str | None, dict[str, str]]:
    """Page cookies per caller; an infer key cannot sign in (the pages need feedback)."""
    cookies: dict[str | None, dict[str, str]] = {None: {}, "infer": {}}
    for caller in ("feedback", "admin"):
        with httpx.Client(base_url=base_url) as browser:
            r = browser.post("/ui/login", data={"key": KEYS[caller], "next": "/ui/label"})
            assert r.status_code == 303, r.text
            cookies[caller] = dict(browser.cookies)
    assert httpx.post(f"{base_url}/ui/login", data={"key": INFER_KEY}).status_code == 403
    return cookies


def call(base_url: str, method: str, path: str, caller: str | None, cookies: dict) -> httpx.Response:
    # Values that exist nowhere: an accepted caller gets a 4xx about them, never a change.
    url = re.sub(r"\{(\w+)\}", lambda m: "nosuch" if m[1] != "alias" else "candidate", path)
    headers = auth(KEYS[caller]) if caller and not path.startswith("/ui") else {}
    with httpx.Client(base_url=base_url, headers=headers, cookies=cookies, timeout=60) as client:
        body = {"json": {}} if method in ("POST", "PUT") and not path.startswith("/ui") else {}
        return client.request(method, url, **body)


def refused(response: httpx.Response) -> bool:
    location = response.headers.get("location", "")
    return response.status_code in (401, 403) or location.startswith("/ui/login?next=")


ROWS = [(method, path, who) for (method, path), who in documented().items()]


@pytest.mark.parametrize("method, path, who", ROWS)
def test_each_route_accepts_exactly_the_documented_callers(base_url, sessions, method, path, who) -> None:
    for caller in (None, "infer", "feedback", "admin"):
        response = call(base_url, method, path, caller, sessions[caller])
        assert response.status_code < 500, (caller, response.text)
        expected = "accepted" if caller in ACCEPTED[who] else "refused"
        got = "refused" if refused(response) else "accepted"
        assert got == expected, (caller, response.status_code, response.text[:300])
