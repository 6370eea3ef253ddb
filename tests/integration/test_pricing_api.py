"""The pricing stage's store rows on the real Redis and HBase, and what the API and the dashboard answer from them:
rows ``pr`` / ``po`` written by ``RedisStore`` / ``HBaseStore`` (as the applier does), read by a TestClient over
``create_app``. tests/integration/test_pricing_job.py runs the real job."""

from __future__ import annotations

import uuid
from decimal import Decimal

import orjson
import pytest
from starlette.testclient import TestClient

from connectors.hbase_store import TABLES, HBaseStore
from connectors.redis_store import RedisStore, StoreRow
from operators.identity.model import person_id
from tests.helpers import make_settings
from zhongtai.services.api.app import create_app

pytestmark = [pytest.mark.stack]

T = 1_796_652_900_000
PID = person_id("user_id:u1")


def _row(kind: str, key: str, ts: int, n1: int, record: dict, ttl: int = 0) -> StoreRow:
    return StoreRow(kind, key, ts, n1, ttl, 0, 0, 0, Decimal(0), 0, 0, 0, orjson.dumps(record).decode())


def _price(item: str, ts: int, cents: int, reasons: list[str]) -> StoreRow:
    return _row("pr", item, ts, cents, {"item": item, "ts_ms": ts, "price_cents": cents, "policy": "standard",
                                        "variant": None, "reasons": reasons})


def _offer(oid: str, ts: int, cents: int, granted: bool = True) -> StoreRow:
    rec = {"offer_id": oid, "person": PID, "item": "A", "ts_ms": ts, "expires_ms": ts + 3_600_000,
           "granted": granted, "list_cents": 9000, "rule_id": "r", "reasons": ["rule"]}
    if granted:
        rec["offer_cents"] = cents
    return _row("po", PID, ts, cents if granted else 0, rec, ttl=600)


@pytest.fixture
def settings():
    return make_settings()


@pytest.fixture
def store(settings):
    s = RedisStore(settings.redis, prefix=f"t{uuid.uuid4().hex[:10]}")
    yield s
    s.delete_prefix()
    s.close()


def test_prices_and_offers_as_the_api_and_the_dashboard_answer_them(settings, store) -> None:
    from zhongtai.services.dashboard import DashboardOptions
    from zhongtai.services.dashboard import create_app as dashboard_app

    store.client.set(store.id_key("user_id:u1"), PID)
    rows = [_price("A", T, 10000, ["base"]), _price("B", T, 9975, ["competitor_match", "floor"]),
            _price("A", T + 900_000, 9000, ["competitor_match"]), _offer("o1", T + 1000, 7200),
            _offer("o2", T + 2000, 0, granted=False)]
    store.write(rows)
    before = {k: store.client.hgetall(k) for k in store.client.scan_iter(match=f"{store.prefix}:*")
              if store.client.type(k) == "hash"}
    store.write(rows)  # a replay of the same store log writes the same values
    assert {k: store.client.hgetall(k) for k in before} == before
    assert 0 < store.client.ttl(store.offers_key(PID)) <= 600
    client = TestClient(create_app(settings, prefix=store.prefix))
    a = client.get("/v1/prices/A").json()
    assert (a["price"], a["price_cents"], a["since_ms"], a["reasons"], a["policy"]) == (
        "90.00", 9000, T + 900_000, ["competitor_match"], "standard")
    assert "art. 18" in a["list_price_policy"]
    missing = client.get("/v1/prices/nope")
    assert missing.status_code == 404 and "pricing.enabled" in missing.json()["error"]
    offers = client.get(f"/v1/offers/user_id:u1?at={T + 5000}").json()
    assert [(o["offer_id"], o["offer_price"], o["list_price"]) for o in offers["offers"]] == [("o1", "72.00", "90.00")]
    assert client.get(f"/v1/offers/{PID}?at={T + 3_700_000}").json()["offers"] == []  # expired
    assert client.get("/v1/offers/user_id:nobody").status_code == 404
    assert client.get("/v1/offers/user_id:u1?at=soon").status_code == 400
    with TestClient(dashboard_app(settings, DashboardOptions(prefix=store.prefix, lag=False))) as dash:
        res = dash.get("/api/prices").json()
    assert res == {"prices": [
        {"item": "A", "price_cents": 9000, "since_ms": T + 900_000, "policy": "standard", "variant": None,
         "reasons": ["competitor_match"]},
        {"item": "B", "price_cents": 9975, "since_ms": T, "policy": "standard", "variant": None,
         "reasons": ["competitor_match", "floor"]}], "scanned": 2, "complete": True}


def test_hbase_keeps_every_change_and_every_decision(settings) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    hb = HBaseStore(settings.hbase, prefix=prefix)
    try:
        hb.ensure_tables()
        hb.write([_price("A", T, 10000, ["base"]), _price("A", T + 900_000, 9000, ["competitor_match"]),
                  _offer("o1", T + 1000, 7200), _offer("o2", T + 2000, 0, granted=False)])
        assert [(r["ts_ms"], r["price_cents"]) for r in hb.price_history("A")] == [(T, 10000), (T + 900_000, 9000)]
        assert [(r["offer_id"], r["granted"]) for r in hb.offer_history(PID)] == [("o1", True), ("o2", False)]
    finally:
        for t in TABLES:
            hb.conn.delete_table(t, disable=True)
        hb.close()
