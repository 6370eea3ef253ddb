"""Headless Chromium for tests that look at a page as a person would: Debian's ``chromium`` driven by
Playwright (no tests here).

``chromium_page(width=, height=)`` launches ``/usr/bin/chromium`` (``make install`` installs Debian's
package; Playwright never downloads a browser of its own here: ``playwright install`` is not used)
and yields one Playwright ``Page`` of that viewport. Tests find elements by ``data-testid``
(``page.get_by_test_id``) and wait with Playwright's ``expect``. The browser and its temporary
profile are gone when the block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
#: Headless Chromium on a machine without a network beyond localhost: no sandbox as root, no GPU, and
#: none of the background connections (updates, sync, QUIC) that a closed network refuses.
FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


@contextmanager
def chromium_page(*, width: int = 1400, height: int = 1000) -> Iterator[Page]:
    """One headless Chromium with one ``width`` x ``height`` page; closed when the block ends."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make install` installs Debian's chromium "
                           "(apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(FLAGS), headless=True)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
