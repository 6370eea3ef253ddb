"""The browser SDK in headless Chromium on a shop page served by this test (another origin than the collector's):
clicks become events, batches go out with fetch and on page hide with sendBeacon, the next page re-sends what
was beaconed, and the real job counts what reached Kafka exactly as the oracle does (the re-sent duplicates
once, the rejected event never)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from connectors.redis_store import RedisStore
from tests.browser import chromium_page
from tests.collector_env import KEYS, WEB_KEY, collector_topic, running_collector
from tests.helpers import (
    counter_mismatches,
    free_port,
    fresh_names,
    make_settings,
    profile_mismatches,
    read_topics,
)
from zhongtai.devtools.generator.oracle import expected, resolve_persons
from zhongtai.jobs.runner import RunOptions, run_events_job
from zhongtai.services.collector.app import SDK_FILE

pytestmark = pytest.mark.stack

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Shop</title>
<script src="{collector}/sdk/zt.js"></script>
<script>
  var n = 0;
  zt.init({{host: "{collector}", writeKey: "{key}", flushAt: 100, flushInterval: 600000,
           onError: function (kind, detail) {{
             document.getElementById("errors").textContent = kind + ": " +
               detail.map(function (r) {{ return r.reason; }}).join(",");
           }}}});
  zt.page("Home", {{path: "/"}});
</script></head><body>
<button data-testid="add" onclick="zt.track('Add To Cart', {{item_id: 'sku-' + (++n), price: '12.50', qty: 1}})">Add</button>
<button data-testid="login" onclick="zt.identify('u-42', {{tier: 'gold'}})">Log in</button>
<button data-testid="buy" onclick="zt.track('purchase', {{order_id: 'o-1', price: '99.90', qty: 2}})">Buy</button>
<button data-testid="bad" onclick="zt.track('purchase', {{price: 'free'}})">Broken button</button>
<button data-testid="send" onclick="zt.flush()">Send</button>
<div data-testid="errors" id="errors"></div>
</body></html>"""


@dataclass(frozen=True)
class Record:
    value: bytes
    timestamp_ms: int


@pytest.fixture()
def shop_page() -> Iterator[tuple[ThreadingHTTPServer, str]]:
    """A page server on 127.0.0.1: ``/zt.js`` is the SDK's file, every other GET its ``html`` attribute."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            sdk = self.path == "/zt.js"
            body = SDK_FILE.read_bytes() if sdk else self.server.html.encode()  # type: ignore[attr-defined]
            self.send_response(200)
            self.send_header("Content-Type", "application/javascript" if sdk else "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _wait_records(settings, topic: str, n: int, timeout_s: float = 90.0) -> list:
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_topics(settings, [topic], idle_polls=1)
        if len(records) >= n or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def _stat(page: Page, name: str) -> int:
    return int(page.evaluate(f"zt.stats.{name}"))


@pytest.mark.flink
def test_clicks_reach_kafka_and_the_job_counts_them_exactly(shop_page, tmp_path) -> None:
    server, origin = shop_page
    settings = make_settings()
    n = fresh_names()
    topic = n.topic_prefix + "collector"  # matched by the job's pattern below
    with running_collector({"collector": {"topic": topic, "write_keys": KEYS, "cors_origins": [origin]}}) as base:
        server.html = PAGE.format(collector=base, key=WEB_KEY)  # type: ignore[attr-defined]
        with chromium_page(width=900, height=600) as page:
            page.goto(origin + "/")
            anonymous = page.evaluate("zt.anonymousId()")
            for _ in range(3):
                page.get_by_test_id("add").click()
            page.get_by_test_id("login").click()
            page.get_by_test_id("buy").click()
            page.get_by_test_id("bad").click()
            assert page.evaluate("zt.queued()") == 7  # nothing left yet: flushAt 100, interval 10 min
            page.get_by_test_id("send").click()
            # one batch of 7: six accepted, the broken button's event rejected with its reason
            expect(page.get_by_test_id("errors")).to_have_text("rejected: wrong_type:props.price", timeout=60_000)
            assert (_stat(page, "accepted"), _stat(page, "rejected"), page.evaluate("zt.queued()")) == (6, 1, 0)
            page.screenshot(path=tmp_path / "shop-after-send.png")
            assert len(_wait_records(settings, topic, 6)) == 6

            # two more clicks, then the page goes away: they leave as a beacon
            page.get_by_test_id("add").click()
            page.get_by_test_id("add").click()
            page.goto("about:blank")
            assert len(_wait_records(settings, topic, 8)) == 8

            # the next page of the site sends the beaconed events once more (their answer was never seen), plus
            # its own page view; the same anonymous cookie and the logged-in user carry over
            page.goto(origin + "/")
            # the SDK flushes what it restored at once (init schedules it): the three may already be answered
            page.wait_for_function("zt.stats.accepted + zt.queued() === 3", timeout=60_000)
            page.get_by_test_id("send").click()
            page.wait_for_function("zt.stats.accepted === 3 && zt.queued() === 0", timeout=60_000)
            assert page.evaluate("zt.anonymousId()") == anonymous
            page.screenshot(path=tmp_path / "shop-second-visit.png")

    msgs = _wait_records(settings, topic, 11)
    envs = [json.loads(m.value()) for m in msgs]
    assert len(envs) == 11 and len({e["event_id"] for e in envs}) == 9  # two beaconed events arrived twice
    assert {e["ids"]["cookie_id"] for e in envs} == {anonymous}
    assert sorted(e["event_type"] for e in envs) == ["add_to_cart"] * 7 + ["identify", "page_view", "page_view",
                                                                             "purchase"]
    assert all(e["ids"].get("user_id") == "u-42" for e in envs if e["event_type"] in ("purchase", "identify"))
    assert {m.key() for m in msgs} == {f"cookie_id:{anonymous}".encode()}  # one browser: one key, one order

    # the real job over the collector's topic, compared with the oracle over the same records
    run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                        redis_prefix=n.prefix, hbase_prefix=n.prefix, resume=False, job_name=n.job))
    records = [Record(m.value(), m.timestamp()[1]) for m in msgs]
    _, person_of = resolve_persons(records, settings.job, settings.pii)
    truth = expected(records, settings.job, settings.pii, person_of)
    store = RedisStore(settings.redis, prefix=n.prefix)
    try:
        assert truth["stats"] == {"received": 11, "valid": 11, "unique": 9, "duplicates": 2, "dlq": 0}
        assert store.stats() == truth["stats"]
        assert counter_mismatches(truth["counters"], store.all_counters()) == []
        every = [v for k, v in store.all_counters().items() if k.startswith("all:")]
        assert (sum(int(c["carts"]) for c in every), sum(int(c["purchases"]) for c in every),
                sum(int(c["views"]) for c in every), sum(Decimal(c["revenue"]) for c in every)) == (
            5, 1, 2, Decimal("199.80"))
        assert sorted(store.persons()) == sorted(truth["profiles"]) and len(truth["profiles"]) == 1
        assert profile_mismatches(truth["profiles"], store.profile) == []
    finally:
        store.delete_prefix()
        store.close()


def test_the_sdk_retries_with_backoff_until_the_collector_is_up(shop_page) -> None:
    server, origin = shop_page
    settings = make_settings()
    topic = collector_topic()
    port = free_port()
    collector = f"http://127.0.0.1:{port}"
    # the SDK from the page's own server: the collector is not there yet
    server.html = PAGE.format(collector=collector, key=WEB_KEY).replace(  # type: ignore[attr-defined]
        f'src="{collector}/sdk/zt.js"', 'src="/zt.js"').replace(
        "flushInterval: 600000,", "flushInterval: 600000, minBackoff: 200, maxBackoff: 800,")
    with chromium_page(width=900, height=600) as page:
        page.goto(origin + "/")  # nothing listens on the collector's port yet
        page.get_by_test_id("add").click()
        page.get_by_test_id("send").click()
        page.wait_for_function("zt.stats.retries >= 3", timeout=60_000)
        assert (page.evaluate("zt.queued()"), _stat(page, "accepted")) == (2, 0)  # kept, not dropped
        cfg = {"collector": {"topic": topic, "write_keys": KEYS, "cors_origins": [origin], "port": port}}
        with running_collector(cfg, port=port):
            page.wait_for_function("zt.stats.accepted === 2 && zt.queued() === 0", timeout=60_000)
    envs = [json.loads(m.value()) for m in _wait_records(settings, topic, 2)]
    assert sorted(e["event_type"] for e in envs) == ["add_to_cart", "page_view"]
