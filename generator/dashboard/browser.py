"""Open a written dashboard in headless Chromium (Playwright driving the system's Chromium): what
the browser test and the scale benchmark share. Playwright is imported on use (the ``test`` extra
installs it); its own browser downloads are never used, Debian's ``chromium`` package is.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium_path() -> str | None:
    """The system Chromium, or None when it is not installed (``apt-get install chromium``)."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    return shutil.which("chromium")


@dataclass
class PageSession:
    """An open dashboard: the Playwright page, console errors and uncaught exceptions seen so far,
    and every URL the page requested that is not a local file."""

    page: Any
    errors: list[str] = field(default_factory=list)
    remote_requests: list[str] = field(default_factory=list)


@contextmanager
def open_dashboard(index: Path, viewport: tuple[int, int] = (1400, 900)) -> Iterator[PageSession]:
    """Load ``index`` (a dashboard's index.html) from disk and wait until its matrix is rendered."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional, test extra

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            session = PageSession(page)
            page.on("console", lambda message: session.errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: session.errors.append(str(error)))
            page.on("request", lambda request: None if request.url.startswith(("file:", "data:", "about:")) else session.remote_requests.append(request.url))
            page.goto(index.resolve().as_uri())
            page.wait_for_selector("body[data-rendered]", timeout=60_000)
            yield session
        finally:
            browser.close()
