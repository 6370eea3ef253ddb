"""The live dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright.

The page is loaded once; counters are then written into Redis the way the job writes them
(``RedisStore.write`` with ``StoreRow``s) and the numbers on the page must change to the exact new
values without a reload (Server-Sent Events). A screenshot is saved under .zt/screenshots/.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import pytest
from playwright.sync_api import expect

from connectors.redis_store import RedisStore
from tests.browser import chromium_page
from tests.helpers import ROOT, Names, free_port, fresh_names, load_expected, make_settings
from tests.integration.test_dashboard_api import counter_row, total_row
from zhongtai.services.dashboard.funnel import label_minute, minute_label

pytestmark = pytest.mark.stack

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


def test_page_updates_live_without_reload(dashboard: Served) -> None:
    base, store = dashboard.base, dashboard.store
    minute = int(time.time()) // 60
    store.write([
        counter_row("spring|email", minute, 1200, 300, 45, "4500.50"),
        counter_row("all", minute, 1200, 300, 45, "4500.50"),
        total_row("valid", 1500), total_row("unique", 1490), total_row("dlq:bad_json", 7),
    ])  # fmt: skip
    with chromium_page(width=1400, height=1500) as page:
        page.goto(base + "/")
        # a marker that survives only as long as the page is not reloaded
        page.evaluate("window.__zt_loaded_once = 'yes'")
        testid = page.get_by_test_id
        expect(testid("funnel-views-spring|email")).to_have_text("1,200", timeout=15_000)
        assert testid("total-received").text_content() == "1,507"
        assert testid("no-tags").text_content() == "no tags yet"

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
        expect(testid("funnel-views-spring|email")).to_have_text("1,337", timeout=15_000)
        assert testid("funnel-purchases-spring|email").text_content() == "52"
        assert testid("funnel-revenue-spring|email").text_content() == "5,200.00"
        assert testid("funnel-views-autumn|sms").text_content() == "80"
        assert testid("funnel-views-all").text_content() == "1,417"
        assert testid("total-received").text_content() == "1,811"
        assert testid("dlq-missing_ids").text_content() == "2"
        assert page.evaluate("window.__zt_loaded_once") == "yes"  # same document: no reload happened
        # tags are discovered by SCAN, cached for 10 s by default
        expect(testid("tag-vip")).to_have_text("3", timeout=20_000)
        expect(testid("srm-banner")).to_have_text(re.compile(r"^SRM warning: sample ratio mismatch"), timeout=20_000)
        rows = testid("exp-banner").inner_text()
        assert "treat" in rows and "+20.0%" in rows and "stop: SRM" in rows  # 12% vs 10% conversion

        shot = SCREENSHOTS / "dashboard.png"
        page.screenshot(path=shot)
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
    from zhongtai.devtools.generator import GeneratorConfig
    from zhongtai.devtools.generator.produce import produce
    from zhongtai.jobs.runner import RunOptions, run_events_job

    settings, n = make_settings(), dashboard.names
    report = produce(settings, GeneratorConfig(seed=55, persons=60, events=600, topic_prefix=n.topic_prefix,
                                               partitions=2), name=n.tag, progress=False)  # fmt: skip
    expected = load_expected(report.expected_path)
    stats = expected["stats"]
    with chromium_page(width=1400, height=1100) as page:
        page.goto(dashboard.base + "/")
        page.evaluate("window.__zt_loaded_once = 'yes'")
        testid = page.get_by_test_id
        expect(testid("total-received")).to_have_text("0", timeout=15_000)
        run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                            redis_prefix=n.prefix, hbase=False, resume=False, job_name=n.job))
        expect(testid("total-received")).to_have_text(f"{stats['received']:,}", timeout=20_000)
        assert testid("total-valid").text_content() == f"{stats['valid']:,}"
        assert testid("total-dlq").text_content() == f"{stats['dlq']:,}"
        for k, v in stats.items():
            if k.startswith("dlq:"):
                assert testid(f"dlq-{k[4:]}").text_content() == f"{v:,}"
        # the funnel window ends at the stream's newest minute (event time, found by SCAN)
        labels = sorted(k.split(":", 1)[1] for k in expected["counters"] if k.startswith("all:"))
        last = label_minute(labels[-1])
        in_window = {minute_label(m) for m in range(last - 29, last + 1)}
        views = sum(int(expected["counters"][f"all:{x}"].get("views", 0)) for x in labels if x in in_window)
        expect(testid("funnel-views-all")).to_have_text(f"{views:,}", timeout=20_000)
        assert page.evaluate("window.__zt_loaded_once") == "yes"
        page.screenshot(path=SCREENSHOTS / "dashboard-job.png")
