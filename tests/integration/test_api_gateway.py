"""The API's gate (keys, scopes, rate limits, sizes, access log) and audit log against the real Redis, Kafka
and HBase (docs/api.md, "Keys, scopes and limits", "Audit"). Keys are made with ``zhongtai keys create`` or
``RedisApiKeys`` under a fresh Redis prefix; the audit table lives in a fresh HBase namespace; topics are fresh
(``make_settings``). Time of the rate limits is a fake clock passed to ``create_app``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid

import httpx
import pytest
from starlette.testclient import TestClient

from connectors.api_keys import KeyRecord, RedisApiKeys
from connectors.hbase_store import HBaseStore
from connectors.redis_experiments import RedisExperiments
from connectors.redis_store import RedisStore
from operators.delivery.ratelimit import take
from operators.experiments.definitions import parse_definitions
from tests.collector_env import collector_topic, running_collector
from tests.helpers import ROOT, fresh_names, make_settings, read_topics
from zhongtai.services.api.app import create_app
from zhongtai.services.api.keys import new_key, scopes_of

pytestmark = [pytest.mark.stack]

DOC = """
rules:
  - id: cart_push
    version: {v}
    name: Cart push
    priority: {p}
    trigger: {{event: [add_to_cart]}}
    actions:
      - {{channel: push, template: cart_nudge}}
"""

EXPERIMENT = """
experiments:
  - key: gw-test
    version: {v}
    unit: person
    variants: [{{key: control, weight: 0.5}}, {{key: treatment, weight: 0.5}}]
    start: 2026-11-01T00:00:00Z
    assign_on: [register]
    conversion: {{event_type: purchase, window: {w}}}
"""


@pytest.fixture
def settings():
    return make_settings(api={"require_keys": True, "rate": {"per_s": 1.0, "burst": 2}, "max_body_bytes": 2048})


@pytest.fixture
def prefix(settings):
    p = f"tgw{uuid.uuid4().hex[:8]}"
    yield p
    RedisStore(settings.redis, prefix=p).delete_prefix()


@pytest.fixture
def store(settings, prefix):
    s = RedisApiKeys(settings.redis, prefix)
    yield s
    s.close()


def _key(store: RedisApiKeys, role: str | None = None, *scopes: str, per_s: float | None = None,
         burst: int | None = None, source: str = "") -> tuple[str, str]:
    k = new_key()
    store.create(KeyRecord(k.key_id, k.digest, "test", role or "", scopes_of(role, list(scopes)), per_s, burst, 0,
                           None, source))
    return k.key_id, k.token


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def test_unknown_revoked_and_missing_scope(settings, prefix, store):
    client = TestClient(create_app(settings, prefix=prefix))
    reader_id, reader = _key(store, "reader")
    r = client.get("/v1/rules")
    assert (r.status_code, r.json()["error"]) == (401, "missing or wrong bearer token: send `Authorization: "
                                                       "Bearer <api.token>`")
    forged = reader[:-1] + ("0" if reader[-1] != "0" else "1")
    r = client.get("/v1/rules", headers={"Authorization": f"Bearer {forged}"})
    assert (r.status_code, r.json()["error"]) == (401, f"unknown or revoked API key {reader_id}: ask an admin for "
                                                       "a key (`zhongtai keys create`)")
    auth = {"Authorization": f"Bearer {reader}"}
    assert client.get("/v1/rules", headers=auth).status_code == 200
    r = client.post("/v1/rules", headers=auth, content=DOC.format(v=1, p=5))
    assert (r.status_code, r.json()) == (403, {
        "error": f"API key {reader_id} lacks scope rules:write for POST /v1/rules; create a key with it "
                 "(`zhongtai keys create --scope rules:write`)", "scope": "rules:write"})
    assert client.get("/healthz").status_code == 200  # open without a key
    store.revoke(reader_id, 5)
    assert client.get("/v1/rules", headers=auth).status_code == 401


def test_legacy_token_is_an_admin_key_and_keys_work_beside_it(settings, prefix, store):
    client = TestClient(create_app(make_settings(), token="s3cret", prefix=prefix))
    assert client.get("/v1/audit?limit=1", headers={"Authorization": "Bearer s3cret"}).status_code != 401
    _, collector = _key(store, "collector")
    r = client.get("/v1/profiles/user_id:u1", headers={"Authorization": f"Bearer {collector}"})
    assert (r.status_code, r.json()["scope"]) == (403, "profiles:read")


def test_rate_limit_429_with_retry_after_per_key(settings, prefix, store):
    clock = Clock()
    client = TestClient(create_app(settings, prefix=prefix, clock=clock))
    a_id, a = _key(store, "reader")  # api.rate: 1/s, burst 2
    _, b = _key(store, "reader", per_s=0.25, burst=1)  # its own rate
    ha, hb = {"Authorization": f"Bearer {a}"}, {"Authorization": f"Bearer {b}"}
    assert [client.get("/v1/rules", headers=ha).status_code for _ in range(2)] == [200, 200]
    r = client.get("/v1/rules", headers=ha)
    assert (r.status_code, r.headers["retry-after"], r.json()) == (429, "1", {
        "error": f"API key {a_id} is over its rate limit (1/s, burst 2); retry in 1 s", "retry_after_s": 1})
    assert client.get("/v1/rules", headers=hb).status_code == 200  # another key has its own bucket
    r = client.get("/v1/rules", headers=hb)
    assert (r.status_code, r.headers["retry-after"]) == (429, "4")
    clock.t += 1.0
    assert client.get("/v1/rules", headers=ha).status_code == 200  # one token back after a second
    assert client.get("/v1/rules", headers=ha).status_code == 429


def test_lua_bucket_is_the_pure_take(store):
    """The script against ``operators.delivery.ratelimit.take`` over an irregular sequence (clock steps back too)."""
    bucket, now_ms = None, 1_000_000
    for step in (0, 0, 0, 0, 100, 333, 0, 2000, -500, 10, 10, 10, 7000, 0, 1):
        now_ms += step
        bucket, expected = take(bucket, now_ms, 3.0, 4)
        assert store.take("lua-vs-pure", now_ms, 3.0, 4) == pytest.approx(expected, abs=1e-9)


def test_body_size_413_and_access_log(settings, prefix, store, caplog):
    client = TestClient(create_app(settings, prefix=prefix))
    key_id, token = _key(store, "admin")
    auth = {"Authorization": f"Bearer {token}"}
    caplog.set_level(logging.INFO, logger="zhongtai.api.access")
    r = client.post("/v1/rules", headers=auth, content="x" * 3000)
    assert (r.status_code, r.json()) == (413, {"error": "request body above api.max_body_bytes (2048 bytes); "
                                                        "send less per request"})

    def chunks():  # no Content-Length: counted while it streams in
        yield b"y" * 1500
        yield b"y" * 1500

    assert client.post("/v1/rules", headers=auth, content=chunks()).status_code == 413
    client.get("/v1/profiles/user_id:secret-person", headers=auth)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "zhongtai.api.access"]
    assert [(x["key"], x["method"], x["route"], x["status"]) for x in lines] == [
        (None, "POST", "/v1/rules", 413),  # refused by its Content-Length before the key is looked up
        (key_id, "POST", "/v1/rules", 413),
        (key_id, "GET", "/v1/profiles/{identifier:path}", 404)]
    assert all(x["latency_ms"] >= 0 for x in lines) and "secret-person" not in caplog.text and token not in caplog.text


def test_control_changes_are_audited_in_hbase_and_on_the_topic(settings, prefix, store):
    hbase_prefix = f"zt_t_{fresh_names().tag}"
    client = TestClient(create_app(settings, prefix=prefix, hbase_prefix=hbase_prefix))
    key_id, token = _key(store, "marketer", per_s=100.0, burst=100)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        assert client.post("/v1/rules", headers=auth, content=DOC.format(v=1, p=5)).status_code == 202
        assert client.post("/v1/rules", headers=auth, content=DOC.format(v=2, p=7)).status_code == 202
        assert client.post("/v1/rules/cart_push/pause?version=2", headers=auth).status_code == 202
        r = client.post("/v1/rules", headers=auth, content=DOC.format(v=1, p=9))  # stale: 409, nothing audited
        assert r.status_code == 409
        got = client.get("/v1/audit?limit=2", headers=auth).json()
        rest = client.get(f"/v1/audit?limit=2&after={got['next']}", headers=auth).json()
        entries = got["entries"] + rest["entries"]
        assert rest["next"] is None
        assert [(e["key"], e["kind"], e["id"], e["op"], e["old_version"], e["new_version"]) for e in entries] == [
            (key_id, "rule", "cart_push", "pause", 2, 2),
            (key_id, "rule", "cart_push", "upsert", 1, 2),
            (key_id, "rule", "cart_push", "upsert", None, 1)]
        assert '- "priority": 5,' in entries[1]["diff"] and '+ "priority": 7,' in entries[1]["diff"]
        assert entries[0]["diff"] == ""
        on_topic = [json.loads(m.value()) for m in read_topics(settings, [settings.kafka.topics.audit])]
        assert sorted(on_topic, key=lambda e: e["message_id"]) == sorted(entries, key=lambda e: e["message_id"])

        # an experiment: the old side is the definition the job recorded in Redis (its own writer here)
        recorded = RedisExperiments(settings.redis, prefix=prefix)
        recorded.write_meta(parse_definitions(EXPERIMENT.format(v=3, w="7d")))
        recorded.close()
        r = client.post("/v1/experiments", headers=auth, content=EXPERIMENT.format(v=4, w="3d"))
        assert r.status_code == 202
        [e] = client.get("/v1/audit?limit=1", headers=auth).json()["entries"]
        assert (e["key"], e["kind"], e["id"], e["op"], e["old_version"], e["new_version"]) == (
            key_id, "experiment", "gw-test", "upsert", 3, 4)
        changed = [ln for ln in e["diff"].splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
        assert changed == ['-  "window": 604800000', '+  "window": 259200000', '- "version": 3',
                           '+ "version": 4'], e["diff"]
    finally:
        hb = HBaseStore(settings.hbase, prefix=hbase_prefix)
        hb.conn.delete_table("audit", disable=True)
        hb.close()


def test_zhongtai_keys_cli_create_list_revoke(settings, prefix):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "zhongtai.cli", "keys", *args, "--prefix", prefix], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    made = cli("create", "--name", "shop", "--role", "reader", "--scope", "collect:write")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    key_id = token.split("_")[1]
    listed = json.loads(cli("list", "--json").stdout)
    assert [(k["id"], k["name"], k["scopes"], k["revoked_ms"]) for k in listed] == [
        (key_id, "shop", ["collect:write", "experiments:read", "profiles:read", "rules:read"], None)]
    assert token.split("_")[2] not in json.dumps(listed)  # the secret is nowhere in the store's listing
    client = TestClient(create_app(settings, prefix=prefix))
    assert client.get("/v1/rules", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert cli("revoke", key_id).returncode == 0
    assert client.get("/v1/rules", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    bad = cli("create", "--name", "x", "--scope", "rules:admin")
    assert bad.returncode == 2 and "invalid choice: 'rules:admin'" in bad.stderr


def test_the_collector_takes_collect_write_keys(settings, prefix, store):
    """``zhongtai collect`` with ``collector.api_keys`` and no write key at all: a collector key sends events with
    its own source; a key without the scope, a revoked one and a forged one get 401."""
    topic = collector_topic()
    _, app_key = _key(store, "collector", source="app")
    _, reader = _key(store, "reader")
    gone_id, gone = _key(store, "collector")
    store.revoke(gone_id, 1)
    msg = {"messageId": f"m-{prefix}", "event": "Member Joined", "userId": "crm-1"}
    with running_collector({"redis": {"prefix": prefix}, "collector": {"topic": topic, "api_keys": True}}) as base:
        for key in (reader, gone, app_key[:-1] + ("0" if app_key[-1] != "0" else "1")):
            assert httpx.post(f"{base}/v1/track", json=msg, headers={"X-Zt-Write-Key": key}).status_code == 401
        r = httpx.post(f"{base}/v1/track", json=msg, auth=httpx.BasicAuth(app_key, ""))
        assert (r.status_code, r.json()) == (200, {"accepted": 1})
    events = [json.loads(m.value()) for m in read_topics(settings, [topic], idle_polls=2)]
    assert [(e["event_id"], e["source"]) for e in events] == [(f"m-{prefix}", "app")]
