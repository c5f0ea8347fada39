"""Debian's headless Chromium, driven by Playwright, for pages tested in a real browser.

`browser` is one Chromium for a test module, not for the session: while it is open,
Playwright's sync API keeps an event loop running in the main thread, where the async tests
that follow need none. `page` is a fresh page (its own context: no cookies or cache shared
between tests). Without Chromium the tests skip, or fail when CI is set
(`.ci/run` installs it). `DICOMSTORE_CHROMIUM` names another binary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright


def chromium_or_skip() -> str:
    found = os.environ.get("DICOMSTORE_CHROMIUM") or shutil.which("chromium")
    if found:
        return found
    reason = "chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_or_skip()
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()
