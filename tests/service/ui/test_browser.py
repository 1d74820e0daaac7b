"""The pages in a real headless Chromium (Debian's ``chromium``, driven by Playwright): voting
with keys only, the stored record un-swapped, buttons disabled while a vote is in flight, the
dashboard's plots drawn with data, and no page errors or requests leaving the server.

These tests fail, never skip, when Chromium is missing: ``.ci/run`` installs it. Their
screenshots go to a temporary folder, or to docs/ui (the ones docs/ui.md shows) when
``LORALOOP_UPDATE_SCREENSHOTS=1``, so a test run leaves the tree as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.service.ui.helpers import ADMIN_KEY, ANN_KEY, BOB_KEY, new_queue, ppo_job

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("LORALOOP_CHROMIUM", "/usr/bin/chromium")
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "ui"
VIEWPORT = {"width": 1280, "height": 860}


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: docs/ui only when asked, so ``make test`` changes no tracked file."""
    if os.environ.get("LORALOOP_UPDATE_SCREENSHOTS") == "1":
        return DOCS_SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


def capture(page: Page, path: Path, *, full_page: bool = True) -> None:
    """Save a screenshot of ``page`` to ``path`` and check what was saved: a PNG as wide as the
    viewport and at least as tall (all of the page when ``full_page``)."""
    page.screenshot(path=path, full_page=full_page)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == VIEWPORT["width"], (path, width)
    page_height = page.evaluate("document.documentElement.scrollHeight")
    expected = max(page_height, VIEWPORT["height"]) if full_page else VIEWPORT["height"]
    assert height == expected, (path, height, expected)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: apt-get install chromium (as .ci/run does), or set "
            "LORALOOP_CHROMIUM to its path; browser tests must run, not skip"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, ui_url: str) -> Iterator[Page]:
    """A fresh browser context; every script error, console error and request to anywhere but
    the server (the pages must work offline) fails the test."""
    context = browser.new_context(viewport=VIEWPORT, base_url=ui_url)
    problems: list[str] = []

    def only_our_server(route: Route) -> None:
        if route.request.url.startswith(ui_url):
            route.continue_()
        else:
            problems.append(f"request left the server: {route.request.url}")
            route.abort()

    context.route("**/*", only_our_server)
    opened = context.new_page()
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    opened.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    yield opened
    context.close()
    assert problems == []


def sign_in(page: Page, key: str, next_url: str) -> None:
    """Keyboard only: the key field has focus; type the key, press Enter."""
    page.goto(f"/ui/login?next={next_url}")
    expect(page.locator("#key")).to_be_focused()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: url.endswith(next_url) and "/ui/login" not in url)


def votes(ui_url: str, queue_id: str) -> list[dict]:
    with httpx.Client(base_url=ui_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        return admin.get(f"/v1/labeling/queues/{queue_id}/votes").json()["data"]


def test_keys_vote_and_the_stored_record_is_unswapped(
    page: Page, ui_url: str, screenshots: Path
) -> None:
    with httpx.Client(base_url=ui_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        queue_id = new_queue(admin)
    sign_in(page, ANN_KEY, f"/ui/label/{queue_id}")
    expect(page.locator("#progress")).to_have_text("1 of 2")
    assert "summarize@" not in page.content()  # anonymous before the vote
    shown_a = page.locator("#side-a").inner_text()
    capture(page, screenshots / "label.png")

    page.keyboard.press("1")  # A better
    expect(page.locator(".reveal")).to_contain_text("A better")
    expect(page.locator("#progress")).to_have_text("2 of 2")
    (first,) = votes(ui_url, queue_id)
    a_index = int(first["shown"][0])
    assert first["verdict"] == str(a_index)  # canonical: the completion that was shown as A
    with httpx.Client(base_url=ui_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        record = admin.get("/v1/feedback/export", params={"use_case": "summarize", "format": "vertex"}).json()
    assert record[f"candidate_{record['choice']}"] == shown_a

    # Digits typed in the rationale are text, not votes; Esc leaves the box, then 2 votes B.
    page.locator("#rationale").focus()
    page.keyboard.type("2 is shorter, 4 words")
    page.keyboard.press("Escape")
    assert len(votes(ui_url, queue_id)) == 1
    page.keyboard.press("2")
    expect(page.locator("#done")).to_be_visible()
    second = votes(ui_url, queue_id)[1]
    assert second["verdict"] == second["shown"][1] and second["rationale"] == "2 is shorter, 4 words"


def test_the_buttons_are_disabled_while_a_vote_is_in_flight(page: Page, ui_url: str) -> None:
    with httpx.Client(base_url=ui_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        queue_id = new_queue(admin)
    sign_in(page, BOB_KEY, f"/ui/label/{queue_id}")
    held: list[Route] = []
    page.route("**/votes", lambda route: held.append(route))  # hold the post until released
    page.keyboard.press("3")
    for button in page.locator("#vote button").all():
        expect(button).to_be_disabled()
    page.keyboard.press("4")  # ignored: the buttons are disabled
    for _ in range(100):  # let Playwright deliver the held request to our handler
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    held[0].continue_()
    expect(page.locator(".reveal")).to_contain_text("tie")
    (vote,) = votes(ui_url, queue_id)
    assert vote["verdict"] == "tie"


def test_the_dashboard_and_job_plots_render_with_data(
    page: Page, ui_url: str, store, screenshots: Path
) -> None:
    job_id = ppo_job(store, steps=12)
    sign_in(page, ADMIN_KEY, "/ui")
    expect(page.locator("#jobs")).to_contain_text(job_id)
    expect(page.locator("#jobs polyline")).to_have_count(1)
    capture(page, screenshots / "dashboard.png")

    page.goto(f"/ui/jobs/{job_id}")
    expect(page.locator(".plot canvas")).to_have_count(5)
    assert page.evaluate("window.plots.length") == 5
    assert page.evaluate("window.plots.map(p => p.data[0].length)") == [12] * 5
    assert page.evaluate("window.plots[0].data[1][11]") == pytest.approx(1.2)
    capture(page, screenshots / "job.png")


def test_keyboard_only_from_sign_in_to_a_queue(
    page: Page, ui_url: str, screenshots: Path
) -> None:
    with httpx.Client(base_url=ui_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        queue_id = new_queue(admin)
    page.goto("/ui/login")
    capture(page, screenshots / "login.png", full_page=False)
    page.keyboard.type(ANN_KEY)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: url.endswith("/ui/label"))
    link = page.locator(f'a[href="/ui/label/{queue_id}"]')
    for _ in range(20):  # tab through the page until the queue's link has focus
        page.keyboard.press("Tab")
        if link.evaluate("el => el === document.activeElement"):
            break
    expect(link).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: url.endswith(f"/ui/label/{queue_id}"))
    expect(page.locator("#progress")).to_be_visible()
