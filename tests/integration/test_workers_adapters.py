"""Channel adapters against real local servers, contact directories, and the workers' Redis state
(atomic claims across processes, a shared token bucket), each with a control that would fail."""

from __future__ import annotations

import json
import os
import threading
import time

import orjson
import pytest

from connectors.channels import build_adapter
from connectors.channels.base import Contact
from connectors.channels.contacts import ContactLookupError, FileContactDirectory, HttpContactDirectory
from connectors.channels.http import sign
from connectors.channels.redis_state import RedisLedger, RedisTokenBucket, redis_client
from connectors.channels.smtp import SmtpAdapter
from operators.delivery import ledger as ledger_sm
from operators.delivery.ledger import Outcome, Record
from operators.delivery.ratelimit import LocalTokenBucket
from tests.helpers import free_port, fresh_names, make_settings
from tests.workers_env import RecordingHttpServer, make_action

CONTACT = Contact("p1", email="a@example.com", phone="+8613800000001", push_token="tok-1",
                  webhook_url=None)


def _worker_cfg(**kw):
    return make_settings(worker={"lease_ms": 30_000, **kw}).worker


# ---- HTTP provider adapters -------------------------------------------------------------------
@pytest.mark.parametrize("channel,expect", [
    ("sms", {"to": "+8613800000001"}),
    ("push", {"token": "tok-1", "title": "welcome"}),
    ("coupon", {"person_id": "p1", "campaign": "c1", "params": {"coupon_value": 20}}),
])
def test_http_provider_adapters_post_signed_idempotent_requests(channel, expect):
    with RecordingHttpServer() as srv:
        cfg = _worker_cfg(**{channel: {"url": f"{srv.url}/{channel}", "token": "t0k", "signing_secret": "s3"}})
        adapter = build_adapter(channel, cfg, clock=lambda: 1_700_000_000.0)
        a = make_action(1, channel, person="p1", coupon_value=20)
        res = adapter.deliver(a, CONTACT)
        adapter.close()
    assert (res.status, res.provider_id) == ("delivered", f"prov-{a.action_id}")
    (r,) = srv.requests
    body = orjson.loads(r.body)
    assert r.path == f"/{channel}" and body["action_id"] == a.action_id
    assert {k: body[k] for k in expect} == expect
    assert r.headers["Idempotency-Key"] == a.action_id
    assert r.headers["Authorization"] == "Bearer t0k"
    assert r.headers["X-Zhongtai-Signature"] == sign(b"s3", 1_700_000_000, r.body)


def test_http_classification_of_answers():
    a = make_action(2, "sms", person="p1")
    plan = {a.action_id: [429, 503, 400, 409, 200]}
    with RecordingHttpServer(plan=plan) as srv:
        adapter = build_adapter("sms", _worker_cfg(sms={"url": srv.url}))
        results = [adapter.deliver(a, CONTACT) for _ in range(5)]
        no_phone = adapter.deliver(a, Contact("p1", email="x@y"))
        adapter.close()
    assert [r.status for r in results] == ["transient", "transient", "permanent", "delivered", "delivered"]
    assert results[2].reason.startswith(f"POST {srv.url}: HTTP 400")
    assert (no_phone.status, no_phone.reason, len(srv.requests)) == ("suppressed", "no_address", 5)
    down = build_adapter("sms", _worker_cfg(sms={"url": f"http://127.0.0.1:{free_port()}/x", "timeout_s": 0.5}))
    r = down.deliver(a, CONTACT)
    assert r.status == "transient" and "ConnectError" in r.reason


def test_webhook_uses_the_contacts_url_and_destination_is_per_host():
    adapter = build_adapter("webhook", _worker_cfg(webhook={"url": "http://default:1/x"}))
    a = make_action(3, "webhook", person="p1")
    assert adapter.destination(a, Contact("p1", webhook_url="https://h.example:8443/hook?a=1")) == \
        "webhook:https://h.example:8443"
    assert adapter.destination(a, Contact("p1")) == "webhook:http://default:1"
    with pytest.raises(ValueError, match="worker.sms.url is empty"):
        build_adapter("sms", _worker_cfg())
    with pytest.raises(ValueError, match="unknown channel"):
        build_adapter("fax", _worker_cfg())


def test_smtp_unreachable_is_transient():
    cfg = _worker_cfg(smtp={"port": free_port(), "timeout_s": 0.5})
    r = SmtpAdapter(cfg.smtp, {}).deliver(make_action(4, "email", person="p1"), CONTACT)
    assert r.status == "transient" and "ConnectionRefusedError" in r.reason


# ---- contact directories ---------------------------------------------------------------------
def test_file_directory_yaml_json_reload_and_errors(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("p1: {email: a@x, opt_out: [sms]}\n", encoding="utf-8")
    d = FileContactDirectory(y)
    assert d.lookup("p1") == Contact("p1", email="a@x", opt_out=frozenset({"sms"}))
    assert d.lookup("p2") is None
    y.write_text("p2: {phone: '+1'}\n", encoding="utf-8")
    os.utime(y, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert d.lookup("p1") is None and d.lookup("p2").phone == "+1"  # reloaded on change
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"p3": {"webhook_url": "http://h/x"}}), encoding="utf-8")
    assert FileContactDirectory(j).lookup("p3").address("webhook") == "http://h/x"
    j.write_text(json.dumps({"p3": {"fax": "1"}}), encoding="utf-8")
    with pytest.raises(ContactLookupError, match=r"unknown fields \['fax'\]"):
        FileContactDirectory(j).lookup("p3")
    with pytest.raises(ContactLookupError, match="does not exist"):
        FileContactDirectory(tmp_path / "nope.yaml").lookup("p1")


def test_http_directory_answers_404_as_unknown_and_5xx_as_retry():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            code, body = {"/c/p1": (200, b'{"email": "a@x"}'), "/c/p%2F2": (200, b'{"phone": "1"}'),
                          "/c/boom": (503, b"")}.get(self.path, (404, b""))
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        d = HttpContactDirectory(f"http://127.0.0.1:{srv.server_port}/c/", token="t", timeout_s=2)
        assert d.lookup("p1") == Contact("p1", email="a@x")
        assert d.lookup("p/2").phone == "1"  # person ids are URL-quoted
        assert d.lookup("nobody") is None
        with pytest.raises(ContactLookupError, match="HTTP 503"):
            d.lookup("boom")
        d.close()
    finally:
        srv.shutdown()
        srv.server_close()


# ---- Redis state ---------------------------------------------------------------------------------
@pytest.fixture
def redis_env():
    s = make_settings()
    client = redis_client(s.redis)
    prefix = fresh_names().prefix
    yield client, prefix
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


class _RacyLedger(RedisLedger):
    """Control: the same state machine as read-then-write without WATCH (a race window forced open)."""

    def __init__(self, *a, barrier: threading.Barrier, **kw):
        super().__init__(*a, **kw)
        self.barrier = barrier

    def claim(self, action_id, owner, src, now_ms, lease_ms):
        key = self.key(action_id)
        rec = Record.from_hash(self.client.hgetall(key))
        self.barrier.wait()
        new, answer = ledger_sm.claim(rec, owner, src, now_ms, lease_ms)
        if new is not None:
            self.client.hset(key, mapping=new.to_hash())
        return answer


@pytest.mark.stack
def test_redis_claims_are_atomic_across_workers_and_racy_control_is_not(redis_env):
    client, prefix = redis_env
    n = 8

    def race(make):
        answers = []
        barrier = threading.Barrier(n)

        def go(i):
            if make is None:
                barrier.wait()
                led = RedisLedger(redis_client(make_settings().redis), prefix, "sms", 60)
            else:
                led = make(barrier)
            answers.append(led.claim("a" + str(make is None), f"w{i}", f"s{i}", 1_000, 5_000).kind)

        ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sorted(answers)

    assert race(None) == ["acquired"] + ["busy"] * (n - 1)
    racy = race(lambda b: _RacyLedger(redis_client(make_settings().redis), prefix, "sms", 60, barrier=b))
    assert racy.count("acquired") > 1  # without WATCH several workers would deliver the same action

    led = RedisLedger(client, prefix, "sms", 60)
    led.claim("b", "w1", "g/t/0/1", 0, 5_000)
    assert led.finish("b", "w2", Outcome("delivered", provider_id="x"), 10) is None  # not the holder
    rec = led.finish("b", "w1", Outcome("delivered", provider_id="x"), 10)
    assert led.get("b") == rec and rec.state == "delivered" and 0 < client.ttl(led.key("b")) <= 60


@pytest.mark.stack
def test_redis_token_bucket_is_shared_and_local_buckets_are_not(redis_env):
    client, prefix = redis_env
    a = RedisTokenBucket(client, prefix, "sms", per_s=10, burst=2)
    b = RedisTokenBucket(redis_client(make_settings().redis), prefix, "sms", per_s=10, burst=2)
    assert [a.try_take(0), b.try_take(0)] == [0.0, 0.0]
    assert b.try_take(0) == pytest.approx(0.1) and a.try_take(50) == pytest.approx(0.05)
    assert a.try_take(100) == 0.0 and b.try_take(100) == pytest.approx(0.1)
    b.client.close()
    la, lb = LocalTokenBucket(10, 2), LocalTokenBucket(10, 2)  # control: each process its own burst
    assert [la.try_take(0), la.try_take(0), lb.try_take(0), lb.try_take(0)] == [0.0] * 4
