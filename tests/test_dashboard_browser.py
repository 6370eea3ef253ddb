"""The live dashboard in a real browser: headless Chromium (Debian's package) over the DevTools protocol.

The page is loaded once; counters are then written into Redis the way the job writes them
(``RedisStore.write`` with ``StoreRow``s) and the numbers on the page must change to the exact new
values without a reload (Server-Sent Events). A screenshot is saved under .zt/screenshots/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.redis_store import RedisStore
from tests.helpers import Names, fresh_names, load_expected, make_settings
from tests.test_dashboard_api import counter_row, total_row
from zhongtai.browser import HeadlessChromium, free_port
from zhongtai.dashboard.funnel import label_minute, minute_label

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / ".zt" / "screenshots"


@dataclass(frozen=True)
class Served:
    base: str
    store: RedisStore
    names: Names


@pytest.fixture()
def dashboard():
    """A ``zhongtai dashboard`` process on a free port over a fresh prefix (removed afterwards)."""
    settings = make_settings()
    n = fresh_names()
    store = RedisStore(settings.redis, prefix=n.prefix)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zhongtai.cli", "dashboard", "--port", str(port), "--prefix", n.prefix,
         "--group", n.group, "--refresh", "0.3"],
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
        yield Served(base, store, n)
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


def test_page_updates_live_without_reload(dashboard: Served) -> None:
    base, store = dashboard.base, dashboard.store
    minute = int(time.time()) // 60
    store.write([
        counter_row("spring|email", minute, 1200, 300, 45, "4500.50"),
        counter_row("all", minute, 1200, 300, 45, "4500.50"),
        total_row("valid", 1500), total_row("unique", 1490), total_row("dlq:bad_json", 7),
    ])  # fmt: skip
    with HeadlessChromium(width=1400, height=1500) as browser:
        browser.navigate(base + "/")
        # a marker that survives only as long as the page is not reloaded
        browser.evaluate("window.__zt_loaded_once = 'yes'")
        assert browser.wait_for(_text("funnel-views-spring|email") + " === '1,200'", timeout=15)
        assert browser.evaluate(_text("total-received")) == "1,507"
        assert browser.evaluate(_text("no-tags")) == "no tags yet"

        # the job writes newer absolute values for the same minute, a new scope, totals and a tag segment
        store.write([
            counter_row("spring|email", minute, 1337, 310, 52, "5200.00"),
            counter_row("autumn|sms", minute, 80, 9, 3, "120.00"),
            counter_row("all", minute, 1417, 319, 55, "5320.00"),
            total_row("valid", 1800), total_row("unique", 1790), total_row("dlq:bad_json", 9), total_row("dlq:missing_ids", 2),
        ])  # fmt: skip
        store.client.sadd(f"{store.prefix}:tag:vip", "p1", "p2", "p3")
        # experiment statistics with a sample-ratio mismatch (800 vs 1000 units at 50/50)
        store.client.hset(f"{store.prefix}:exp:banner:control", mapping={"units": "1000", "converted": "100"})
        store.client.hset(f"{store.prefix}:exp:banner:treat", mapping={"units": "800", "converted": "96"})
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
        srm = browser.wait_for(_text("srm-banner"), timeout=20)
        assert srm.startswith("SRM warning: sample ratio mismatch")
        rows = browser.evaluate("document.querySelector('[data-testid=\"exp-banner\"]').innerText")
        assert "treat" in rows and "+20.0%" in rows and "stop: SRM" in rows  # 12% vs 10% conversion

        shot = browser.screenshot(SCREENSHOTS / "dashboard.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_sse_stream_pushes_summaries_and_counts_its_clients(dashboard: Served) -> None:
    base, store = dashboard.base, dashboard.store
    store.write([total_row("valid", 21), total_row("dlq:late", 1)])
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


@pytest.mark.flink
def test_page_follows_the_real_job_as_events_flow(dashboard: Served) -> None:
    """Generated events through the real event job (mini-cluster) while the page is open."""
    from zhongtai.generator import GeneratorConfig
    from zhongtai.generator.produce import produce
    from zhongtai.runner import RunOptions, run_events_job

    settings, n = make_settings(), dashboard.names
    report = produce(settings, GeneratorConfig(seed=55, persons=60, events=600, topic_prefix=n.topic_prefix,
                                               partitions=2), name=n.tag, progress=False)  # fmt: skip
    expected = load_expected(report.expected_path)
    stats = expected["stats"]
    with HeadlessChromium(width=1400, height=1100) as browser:
        browser.navigate(dashboard.base + "/")
        browser.evaluate("window.__zt_loaded_once = 'yes'")
        assert browser.wait_for(_text("total-received") + " === '0'", timeout=15)
        run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                            redis_prefix=n.prefix, hbase=False, resume=False, job_name=n.job))
        browser.wait_for(_text("total-received") + f" === '{stats['received']:,}'", timeout=20)
        assert browser.evaluate(_text("total-valid")) == f"{stats['valid']:,}"
        assert browser.evaluate(_text("total-dlq")) == f"{stats['dlq']:,}"
        for k, v in stats.items():
            if k.startswith("dlq:"):
                assert browser.evaluate(_text(f"dlq-{k[4:]}")) == f"{v:,}"
        # the funnel window ends at the stream's newest minute (event time, found by SCAN)
        labels = sorted(k.split(":", 1)[1] for k in expected["counters"] if k.startswith("all:"))
        last = label_minute(labels[-1])
        in_window = {minute_label(m) for m in range(last - 29, last + 1)}
        views = sum(int(expected["counters"][f"all:{x}"].get("views", 0)) for x in labels if x in in_window)
        browser.wait_for(_text("funnel-views-all") + f" === '{views:,}'", timeout=20)
        assert browser.evaluate("window.__zt_loaded_once") == "yes"
        browser.screenshot(SCREENSHOTS / "dashboard-job.png")
