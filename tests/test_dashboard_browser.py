"""The live dashboard in a real browser: headless Chromium (Debian's package) over the DevTools protocol.

The page is loaded once; counters are then written into Redis the way the job writes them
(``RedisStore.write`` with ``StoreRow``s) and the numbers on the page must change to the exact new
values without a reload (Server-Sent Events). A screenshot is saved under .zt/screenshots/.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.redis_store import RedisStore, StoreRow
from tests.helpers import fresh_names, make_settings
from zhongtai.browser import HeadlessChromium

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / ".zt" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _counter(scope: str, minute: int, views: int, carts: int, purchases: int, revenue: str) -> StoreRow:
    return StoreRow("c", scope, minute, views, carts, purchases, views + carts + purchases, 1, Decimal(revenue), 0, 0, 0)


def _total(name: str, value: int) -> StoreRow:
    return StoreRow("s", name, 0, value, 0, 0, 0, 0, Decimal(0), 0, 0, 0)


@pytest.fixture()
def dashboard():  # noqa: ANN201
    """(base URL, RedisStore) of a dashboard process on a free port over a fresh prefix."""
    settings = make_settings()
    n = fresh_names()
    store = RedisStore(settings.redis, prefix=n.prefix)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zhongtai.cli", "dashboard", "--port", str(port), "--prefix", n.prefix,
         "--refresh", "0.3", "--no-lag"],
        cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"dashboard did not start on {base}:\n{out}") from None
                time.sleep(0.2)
        yield base, store
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        store.delete_prefix()
        store.close()


def _text(testid: str) -> str:
    return f"((document.querySelector('[data-testid=\"{testid}\"]') || {{}}).textContent || null)"


def test_page_updates_live_without_reload(dashboard) -> None:  # noqa: ANN001
    base, store = dashboard
    minute = int(time.time()) // 60
    store.write([
        _counter("spring|email", minute, 1200, 300, 45, "4500.50"),
        _counter("all", minute, 1200, 300, 45, "4500.50"),
        _total("valid", 1500), _total("unique", 1490), _total("dlq:bad_json", 7),
    ])  # fmt: skip
    with HeadlessChromium(width=1400, height=1100) as browser:
        browser.navigate(base + "/")
        # a marker that survives only as long as the page is not reloaded
        browser.evaluate("window.__zt_loaded_once = 'yes'")
        assert browser.wait_for(_text("funnel-views-spring|email") + " === '1,200'", timeout=15)
        assert browser.evaluate(_text("total-received")) == "1,507"
        assert browser.evaluate(_text("no-tags")) == "no tags yet"

        # the job writes newer absolute values for the same minute, a new scope, totals and a tag segment
        store.write([
            _counter("spring|email", minute, 1337, 310, 52, "5200.00"),
            _counter("autumn|sms", minute, 80, 9, 3, "120.00"),
            _counter("all", minute, 1417, 319, 55, "5320.00"),
            _total("valid", 1800), _total("unique", 1790), _total("dlq:bad_json", 9), _total("dlq:missing_ids", 2),
        ])  # fmt: skip
        store.client.sadd(f"{store.prefix}:tag:vip", "p1", "p2", "p3")
        browser.wait_for(_text("funnel-views-spring|email") + " === '1,337'", timeout=15)
        assert browser.evaluate(_text("funnel-purchases-spring|email")) == "52"
        assert browser.evaluate(_text("funnel-revenue-spring|email")) == "5,200.00"
        assert browser.evaluate(_text("funnel-views-autumn|sms")) == "80"
        assert browser.evaluate(_text("funnel-views-all")) == "1,417"
        assert browser.evaluate(_text("total-received")) == "1,811"
        assert browser.evaluate(_text("dlq-missing_ids")) == "2"
        assert browser.evaluate("window.__zt_loaded_once") == "yes"  # same document: no reload happened
        # tags are discovered by SCAN, cached for 10 s by default
        assert browser.wait_for(_text("tag-vip") + " === '3'", timeout=20)

        shot = browser.screenshot(SCREENSHOTS / "dashboard.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_sse_stream_pushes_summaries_and_counts_its_clients(dashboard) -> None:  # noqa: ANN001
    base, store = dashboard
    store.write([_total("valid", 21), _total("dlq:late", 1)])
    with urllib.request.urlopen(base + "/events", timeout=10) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        event = None
        while True:
            line = stream.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "summary":
                summary = json.loads(line[6:])
                break
        assert summary["prefix"] == store.prefix
        assert summary["totals"]["received"] == 22
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            assert "zhongtai_dashboard_sse_clients 1.0" in r.read().decode()
