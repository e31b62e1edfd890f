"""Headless Chromium for browser tests: one Playwright per session, started late, and a watchdog per test.

A browser test must fail, never hang: CI has a wall-clock limit and a hung Chromium (seen once: spinning on
both cores, deaf to Playwright) would use it all. So every launch has a deadline and one retry, every page a
default timeout, and a watchdog kills the test's Chromium processes when a test outlives BROWSER_TEST_SECONDS,
which makes the blocked Playwright call raise. Browser test modules run last (see pytest_collection_modifyitems):
a running sync Playwright owns the main thread's event loop, which asyncio.run() in other tests cannot share.
"""
from __future__ import annotations

import threading
from pathlib import Path

import psutil
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection", "--disable-dev-shm-usage", "--no-zygote",
]
LAUNCH_TIMEOUT_MS = 60_000
ACTION_TIMEOUT_MS = 30_000
BROWSER_TEST_SECONDS = 240
"""Longer than any browser test takes on a loaded 2-core box, shorter than pytest-timeout's 300 s."""


def _is_browser_test(item: pytest.Item) -> bool:
    return "browser" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last, in their original order, marked `browser` (scripts/test.py runs them apart)."""
    for item in items:
        if _is_browser_test(item):
            item.add_marker(pytest.mark.browser)
    items.sort(key=_is_browser_test)


def _kill_chromium() -> None:
    """SIGKILL the Chromium processes this test process started (other sessions' browsers are left alone)."""
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" in child.name():
                child.kill()
        except psutil.Error:
            pass


@pytest.fixture(autouse=True)
def _browser_watchdog(request):
    if not _is_browser_test(request.node):
        yield
        return
    timer = threading.Timer(BROWSER_TEST_SECONDS, _kill_chromium)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _launch(playwright):
    last: Exception | None = None
    for _ in range(2):
        try:
            return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True,
                                              timeout=LAUNCH_TIMEOUT_MS)
        except Exception as exc:  # a launch that timed out or crashed: kill what is left and try once more
            last = exc
            _kill_chromium()
    raise RuntimeError(f"Chromium did not start twice: {last}")


class _Browsers:
    """The session's Playwright and its current Chromium, launched again after a watchdog kill."""

    def __init__(self, playwright) -> None:
        self.playwright = playwright
        self.current = None

    def get(self):
        if self.current is None or not self.current.is_connected():
            _kill_chromium()
            self.current = _launch(self.playwright)
        return self.current

    def close(self) -> None:
        closer = threading.Timer(30, _kill_chromium)  # close() has no timeout of its own
        closer.daemon = True
        closer.start()
        try:
            if self.current is not None:
                self.current.close()
        except Exception:
            pass
        finally:
            closer.cancel()


@pytest.fixture(scope="session")
def _browsers():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    manager = sync_api.sync_playwright()
    browsers = _Browsers(manager.start())
    try:
        yield browsers
    finally:
        browsers.close()
        try:
            manager.__exit__(None, None, None)
        finally:
            _kill_chromium()


@pytest.fixture
def browser(_browsers):
    """A connected Chromium (relaunched if a watchdog killed the previous one)."""
    return _browsers.get()


@pytest.fixture
def page(browser):
    """A fresh context and page with bounded waits; its console and errors are printed when a test fails."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"console.{m.type}: {m.text}"))
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    page.console_messages = messages  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        print("\n".join(messages))
        try:
            context.close()
        except Exception:
            pass
