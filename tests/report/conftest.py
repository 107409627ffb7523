"""A real headless Chromium for the report's browser tests: one browser per session, one page
per test, every network request blocked and recorded.

The browser is Debian's ``/usr/bin/chromium`` driven by Playwright (which downloads no
browser). The tests marked ``browser`` skip where it is missing, naming the package, and
fail instead under ``FLIPLESS_REQUIRE_SYSTEM_PACKAGES=1`` (tests/conftest.py), which
``.ci/run`` sets after ``apt-get install chromium``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Chromium, launched once per test session."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing; the report's browser tests need Debian's Chromium: run "
            "`apt-get install chromium` (never `playwright install`)."
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed; install the test extra: pip install -e '.[dev]'.")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        yield launched
        launched.close()


@dataclass
class PageLog:
    """What a page tried and said: blocked requests, script errors, console errors, dialogs."""

    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (1280×900) whose only allowed requests are file: and data: URLs.

    ``page.log`` (a :class:`PageLog`) records every other request (aborted), every uncaught
    script error or console error, and every dialog (dismissed).
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    log = PageLog()

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith(("file:", "data:")):
            request_route.continue_()
        else:
            log.blocked.append(url)
            request_route.abort()

    def dialog(found: Any) -> None:
        log.dialogs.append(f"{found.type}: {found.message}")
        found.dismiss()

    context.route("**/*", route)
    opened.on("pageerror", lambda error: log.errors.append(f"page error: {error}"))
    opened.on(
        "console",
        lambda message: (
            log.errors.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    opened.on("dialog", dialog)
    opened.log = log
    yield opened
    context.close()
