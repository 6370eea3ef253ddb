"""The dashboard's JSON endpoints and /metrics over the real Redis (and Kafka for the lag), exact values."""

from __future__ import annotations

import re
import warnings
from decimal import Decimal

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from connectors.kafka_admin import create_topics
from connectors.redis_experiments import ExperimentRow, RedisExperiments, stats_from_hash
from connectors.redis_store import RedisStore, StoreRow
from operators.experiments.definitions import definition_from_mapping
from operators.experiments.report import experiment_report, to_json
from tests.helpers import free_port, fresh_names, make_settings
from zhongtai.services.dashboard import DashboardOptions, create_app
from zhongtai.services.dashboard.funnel import minute_label
from zhongtai.services.dashboard.kafka_lag import consumer_lag

with warnings.catch_warnings():  # starlette 1.x suggests httpx2 for its TestClient; httpx is what is pinned
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.stack

NOW_MIN = 29_356_020  # 2025-10-25 03:00 UTC
NOW_MS = NOW_MIN * 60_000 + 30_000


def counter_row(scope: str, minute: int, views: int, carts: int, purchases: int, revenue: str) -> StoreRow:
    """A live-counter upsert as the job's store sink writes it (persons = 2)."""
    return StoreRow("c", scope, minute, views, carts, purchases, views + carts + purchases, 2, Decimal(revenue), 0, 0, 0)


def total_row(name: str, value: int) -> StoreRow:
    """A pipeline-total upsert (``valid``, ``unique``, ``dlq:<reason>``)."""
    return StoreRow("s", name, 0, value, 0, 0, 0, 0, Decimal(0), 0, 0, 0)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def env():
    settings = make_settings()
    n = fresh_names()
    store = RedisStore(settings.redis, prefix=n.prefix)
    clock = FakeClock()
    opts = DashboardOptions(prefix=n.prefix, window_minutes=3, discover_every_s=0.0, lag=False)
    app = create_app(settings, opts, clock=clock, wall_ms=lambda: NOW_MS)
    try:
        with TestClient(app) as client:
            yield client, store, clock, settings, n
    finally:
        store.delete_prefix()
        store.close()


def test_summary_and_funnel_are_the_counters_the_job_wrote(env) -> None:
    client, store, clock, _, _ = env
    store.write([
        counter_row("spring|email", NOW_MIN - 1, 100, 20, 5, "50.00"),
        counter_row("spring|email", NOW_MIN, 60, 10, 4, "45.50"),
        counter_row("autumn|sms", NOW_MIN, 40, 2, 6, "12.25"),
        counter_row("all", NOW_MIN - 1, 100, 20, 5, "50.00"),
        counter_row("all", NOW_MIN, 100, 12, 10, "57.75"),
        counter_row("spring|email", NOW_MIN - 3, 999, 0, 0, "0"),  # outside the 3-minute window
        total_row("valid", 1000), total_row("unique", 990), total_row("dlq:bad_json", 7), total_row("dlq:late", 3),
    ])  # fmt: skip
    s = client.get("/api/summary").json()
    assert s["prefix"] == store.prefix and s["now_ms"] == NOW_MS
    assert s["window"] == {"minutes": 3, "end": minute_label(NOW_MIN)}
    assert s["totals"] == {"valid": 1000, "unique": 990, "dlq:bad_json": 7, "dlq:late": 3, "dlq": 10,
                           "received": 1010, "duplicates": 10}  # fmt: skip
    rows = [{k: f[k] for k in ("scope", "views", "carts", "purchases", "revenue", "conversion")} for f in s["funnels"]]
    assert rows == [
        {"scope": "all", "views": 200, "carts": 32, "purchases": 15, "revenue": "107.75", "conversion": 0.075},
        {"scope": "spring|email", "views": 160, "carts": 30, "purchases": 9, "revenue": "95.50", "conversion": 9 / 160},
        {"scope": "autumn|sms", "views": 40, "carts": 2, "purchases": 6, "revenue": "12.25", "conversion": 0.15},
    ]
    assert s["tags"] == {"count": 0, "top": []}
    assert s["experiments"] == []
    assert s["health"]["events_per_s"] is None  # one sample so far
    assert s["health"]["lag"]["error"] == "disabled"

    f = client.get("/api/funnel", params={"campaign": "spring", "channel": "email"}).json()
    assert f["minutes"] == [minute_label(NOW_MIN - 2), minute_label(NOW_MIN - 1), minute_label(NOW_MIN)]
    assert f["series"]["views"] == [0, 100, 60]
    assert f["series"]["purchases"] == [0, 5, 4]
    assert f["series"]["revenue"] == ["0.00", "50.00", "45.50"]
    assert f["series"]["persons"] == [0, 2, 2]
    assert (f["campaign"], f["channel"], f["views"], f["revenue"]) == ("spring", "email", 160, "95.50")
    assert client.get("/api/funnel").json()["views"] == 200  # no campaign/channel: all
    r = client.get("/api/funnel", params={"campaign": "winter", "channel": "email"})
    assert r.status_code == 404 and "winter|email" in r.json()["error"]

    # events/s and DLQ rates: the deltas of the totals over the clock between two summaries
    clock.t += 4.0
    store.write([total_row("valid", 1200), total_row("dlq:bad_json", 17), total_row("dlq:late", 5)])
    h = client.get("/api/summary").json()["health"]
    assert h["window_s"] == 4.0
    assert h["events_per_s"] == (1222 - 1010) / 4
    assert h["dlq_per_s"] == 3.0
    assert h["dlq_share"] == 12 / 212
    assert h["dlq_per_s_by_reason"] == {"bad_json": 2.5, "late": 0.5}


def test_window_follows_the_newest_minute_of_a_historical_stream(env) -> None:
    client, store, _, _, _ = env
    old = NOW_MIN - 10_000  # far outside the live window: found by SCAN of the `all` counters
    store.write([counter_row("all", old, 5, 1, 1, "1.00"), counter_row("all", old - 2, 7, 0, 0, "0"),
                 counter_row("x|y", old, 5, 1, 1, "1.00")])  # fmt: skip
    s = client.get("/api/summary").json()
    assert s["window"]["end"] == minute_label(old)
    assert [(f["scope"], f["views"]) for f in s["funnels"]] == [("all", 12), ("x|y", 5)]


def test_tags_show_sizes_once_segments_exist(env) -> None:
    client, store, _, _, _ = env
    assert client.get("/api/summary").json()["tags"] == {"count": 0, "top": []}
    r = store.client
    r.sadd(f"{store.prefix}:tag:vip", *[f"p{i}" for i in range(5)])
    r.sadd(f"{store.prefix}:tag:churn_risk", "p1", "p9")
    r.sadd(f"{store.prefix}:tag:new", "p3", "p4")
    r.set(f"{store.prefix}:tag:broken", "not a set")  # skipped, not an error
    assert client.get("/api/summary").json()["tags"] == {
        "count": 3,
        "top": [{"tag": "vip", "size": 5}, {"tag": "churn_risk", "size": 2}, {"tag": "new", "size": 2}],
    }


DEFINITION = {
    "key": "coupon-value",
    "version": 1,
    "variants": [{"key": "coupon10", "weight": 0.5}, {"key": "coupon20", "weight": 0.5}],
    "conversion": {"event_type": "purchase", "window": "7d"},
}


def _row(variant: str, units: int, converted: int, rev: str, rev2: str) -> ExperimentRow:
    z = Decimal(0)
    return ExperimentRow("coupon-value", variant, units, converted, Decimal(rev), Decimal(rev2), z, z, z)


def test_experiments_report_the_same_numbers_as_the_engine(env) -> None:
    client, _, _, settings, n = env
    exps = RedisExperiments(settings.redis, prefix=n.prefix)
    try:
        defn = definition_from_mapping(DEFINITION)
        exps.write_meta([defn])
        exps.write([_row("coupon10", 1000, 100, "1500.00", "30000.0000"),
                    _row("coupon20", 1010, 140, "2300.00", "44000.0000")])  # fmt: skip
        # a second experiment without a meta hash, with a sample-ratio mismatch
        exps.client.hset(f"{n.prefix}:exp:banner:treat", mapping={"units": "800", "converted": "80"})
        exps.client.hset(f"{n.prefix}:exp:banner:control", mapping={"units": "1000", "converted": "100"})
        got = client.get("/api/experiments").json()["experiments"]
        stats = {v: stats_from_hash(exps.raw("coupon-value", v)) for v in ("coupon10", "coupon20")}
        cfg = settings.experiments
        expected = to_json(experiment_report(defn.experiment, stats, cfg.alpha, correction=cfg.correction,
                                             target_n=cfg.target_n))  # fmt: skip
        assert [e["experiment"] for e in got] == ["banner", "coupon-value"]
        banner, coupon = got
        assert coupon == {**expected, "source": "meta"}
        assert coupon["variants"][1]["conversions"] == 140 and coupon["srm"]["warning"] is False
        assert banner["source"] == "observed"
        assert [v["variation"] for v in banner["variants"]] == ["control", "treat"]
        assert banner["srm"]["warning"] is True and banner["variants"][1]["decision"] == "stop: SRM"
        assert client.get("/api/summary").json()["experiments"] == got
    finally:
        exps.close()


def test_metrics_count_requests_with_low_cardinality_labels(env) -> None:
    client, store, _, _, _ = env
    store.write([total_row("valid", 40), total_row("dlq:bad_json", 2)])
    client.get("/api/summary")
    client.get("/api/summary")
    client.get("/no/such/page")
    client.get("/healthz")
    text = client.get("/metrics").text

    def value(line_start: str) -> float:
        m = re.search("^" + re.escape(line_start) + r" ([0-9.e+]+)$", text, re.MULTILINE)
        assert m, f"no {line_start} in /metrics"
        return float(m.group(1))

    assert value('zhongtai_dashboard_requests_total{method="GET",route="/api/summary",status="200"}') == 2.0
    assert value('zhongtai_dashboard_requests_total{method="GET",route="other",status="404"}') == 1.0
    assert value('zhongtai_dashboard_requests_total{method="GET",route="/healthz",status="200"}') == 1.0
    assert value('zhongtai_dashboard_redis_read_seconds_count{what="totals"}') == 2.0
    assert value('zhongtai_dashboard_redis_read_seconds_count{what="funnel"}') >= 2.0
    assert value("zhongtai_dashboard_sse_clients") == 0.0
    assert value("zhongtai_pipeline_received_total") == 42.0
    assert value("zhongtai_pipeline_valid_total") == 40.0
    assert value('zhongtai_pipeline_dlq_total{reason="bad_json"}') == 2.0
    assert "/no/such/page" not in text


def test_redis_down_is_a_503_that_says_what_to_do() -> None:
    settings = make_settings(redis={"port": free_port()})
    app = create_app(settings, DashboardOptions(lag=False))
    with TestClient(app) as client:
        for path in ("/healthz", "/api/summary", "/api/experiments"):
            r = client.get(path)
            assert r.status_code == 503, path
            assert "zhongtai stack status" in r.json()["error"]
        assert client.get("/").status_code == 200  # the page itself still loads (and shows the failure)


def test_consumer_lag_is_end_minus_committed_offsets() -> None:
    settings = make_settings()
    n = fresh_names()
    topic = f"zt.t{n.tag}.lag"
    create_topics(settings, [topic], partitions=2)
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    for i in range(10):
        p.produce(topic, value=b"x", partition=0)
    for i in range(4):
        p.produce(topic, value=b"y", partition=1)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": n.group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 6), TopicPartition(topic, 1, 4)], asynchronous=False)
    finally:
        c.close()
    lag = consumer_lag(settings.kafka.bootstrap, n.group)
    assert lag.error is None
    assert [(x.partition, x.committed, x.end, x.lag) for x in lag.partitions] == [(0, 6, 10, 4), (1, 4, 4, 0)]
    assert lag.to_json() == {"group": n.group, "total": 4, "by_topic": {topic: 4}, "partitions": 2, "error": None}
    # the same through the dashboard (group option)
    app = create_app(settings, DashboardOptions(prefix=n.prefix, group=n.group))
    with TestClient(app) as client:
        assert client.get("/api/summary").json()["health"]["lag"]["total"] == 4
        assert f'zhongtai_dashboard_consumer_lag_records{{group="{n.group}"}} 4.0' in client.get("/metrics").text
    down = consumer_lag(f"127.0.0.1:{free_port()}", n.group, timeout_s=1.0)
    assert down.error and "cannot read the lag" in down.error and down.to_json()["total"] is None
