"""``zhongtai collect`` against the real Kafka: what is accepted lands on the topic with its key, what is rejected
gets its reason and writes nothing, and the edges (401, 403, 413, 503) answer what to do."""

from __future__ import annotations

import json
import re
import socket
import socketserver
import threading
import time

import httpx
import pytest

from config import load_settings
from connectors.event_producer import producer_config
from connectors.kafka_admin import create_topics
from tests.collector_env import CRM_KEY, KEYS, WEB_KEY, collector_topic, running_collector
from tests.helpers import free_port, read_topics

pytestmark = pytest.mark.stack

WEB = httpx.BasicAuth(WEB_KEY, "")


def _records(topic: str) -> list:
    return read_topics(load_settings(), [topic], idle_polls=2)


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    return 0.0


@pytest.fixture(scope="module")
def collector():
    topic = collector_topic()
    with running_collector({"collector": {"topic": topic, "write_keys": KEYS, "cors_origins": ["http://shop.test"],
                                          "max_body_bytes": 8192, "max_batch_events": 10}}) as base:
        yield base, topic


def test_valid_events_land_on_the_topic_with_their_key_and_bad_ones_get_their_reason(collector) -> None:
    base, topic = collector
    now = "2026-12-07T10:00:00.000Z"
    good = {"type": "track", "messageId": "m-good", "event": "Add To Cart", "anonymousId": "a1", "userId": "u1",
            "timestamp": now, "sentAt": now, "properties": {"item_id": "sku-1", "price": "12.50"}}
    batch = {"batch": [
        good,
        {"type": "identify", "messageId": "m-ident", "userId": "u2", "traits": {"tier": "gold"}},
        {"type": "track", "messageId": "m-bad-price", "event": "purchase", "userId": "u3", "properties": {"price": "x"}},
        {"type": "track", "event": "purchase", "userId": "u3"},
        {"type": "track", "messageId": "m-junk-id", "event": "x", "anonymousId": "undefined"},
    ]}  # fmt: skip
    r = httpx.post(f"{base}/v1/batch", json=batch, auth=WEB)
    assert r.status_code == 400
    body = r.json()
    assert body["accepted"] == 2
    assert [(x["index"], x["messageId"], x["reason"]) for x in body["rejected"]] == [
        (2, "m-bad-price", "wrong_type:props.price"), (3, None, "missing_field:messageId"),
        (4, "m-junk-id", "no_identifier")]
    assert all(x["message"] for x in body["rejected"])

    records = _records(topic)
    by_id = {json.loads(m.value())["event_id"]: m for m in records}
    assert sorted(by_id) == ["m-good", "m-ident"]  # the valid rest is written, the rejected are not
    g = by_id["m-good"]
    assert g.key() == b"cookie_id:a1"  # a browser's events keep one key across identify
    env = json.loads(g.value())
    assert (env["event_type"], env["ids"], env["props"], env["source"]) == (
        "add_to_cart", {"user_id": "u1", "cookie_id": "a1"}, {"item_id": "sku-1", "price": "12.50"}, "web")
    # sentAt == timestamp: the event is dated when the collector received it, which is the record's timestamp
    assert env["ts"] == g.timestamp()[1]
    assert by_id["m-ident"].key() == b"user_id:u2"
    assert json.loads(by_id["m-ident"].value())["props"] == {"traits": {"tier": "gold"}}

    # negative control: a lone bad event is a 400 with nothing accepted, and the topic does not grow
    r = httpx.post(f"{base}/v1/track", json={"messageId": "m-2", "event": "x", "userId": "u1",
                                             "properties": {"qty": "two"}}, auth=WEB)
    assert (r.status_code, r.json()["accepted"], r.json()["rejected"][0]["reason"]) == (400, 0, "wrong_type:props.qty")
    assert len(_records(topic)) == 2

    metrics = httpx.get(f"{base}/metrics").text
    assert _metric(metrics, "zhongtai_collector_accepted_total", source="web") == 2
    assert _metric(metrics, "zhongtai_collector_rejected_total", source="web", reason="wrong_type:props.price") == 1
    assert _metric(metrics, "zhongtai_collector_rejected_total", source="web", reason="no_identifier") == 1
    assert _metric(metrics, "zhongtai_collector_requests_total", route="/v1/batch", status="400") == 1


def test_write_keys_decide_the_source_and_a_missing_or_wrong_key_is_401(collector) -> None:
    base, topic = collector
    msg = {"messageId": "m-crm", "event": "Member Joined", "userId": "crm-1"}
    for auth, headers in ((None, {}), (httpx.BasicAuth("wrong-key-123", ""), {}), (None, {"X-Zt-Write-Key": "nope"})):
        r = httpx.post(f"{base}/v1/track", json=msg, auth=auth, headers=headers)
        assert r.status_code == 401 and "write key" in r.json()["error"]
        assert r.headers["WWW-Authenticate"] == 'Basic realm="zhongtai collector"'
    assert r.json()["error"].count(CRM_KEY) == 0
    assert httpx.post(f"{base}/v1/track", json=msg, headers={"X-Zt-Write-Key": CRM_KEY}).status_code == 200
    # in the body (sendBeacon cannot set headers), as text/plain
    beacon = json.dumps({"batch": [{**msg, "type": "track", "messageId": "m-beacon"}], "writeKey": WEB_KEY})
    r = httpx.post(f"{base}/v1/batch", content=beacon, headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert (r.status_code, r.json()) == (200, {"accepted": 1})
    sources = {json.loads(m.value())["event_id"]: json.loads(m.value())["source"] for m in _records(topic)}
    assert (sources["m-crm"], sources["m-beacon"]) == ("crm", "web")


def test_too_large_is_413_and_writes_nothing(collector) -> None:
    base, topic = collector
    before = len(_records(topic))
    big = {"messageId": "m-big", "event": "x", "userId": "u1", "properties": {"blob": "x" * 9000}}
    r = httpx.post(f"{base}/v1/track", json=big, auth=WEB)
    assert r.status_code == 413 and "collector.max_body_bytes (8192 bytes)" in r.json()["error"]
    many = {"batch": [{"type": "track", "messageId": f"m{i}", "event": "x", "userId": "u1"} for i in range(11)]}
    r = httpx.post(f"{base}/v1/batch", json=many, auth=WEB)
    assert r.status_code == 413 and "more than collector.max_batch_events (10)" in r.json()["error"]
    # negative control: ten fit
    assert httpx.post(f"{base}/v1/batch", json={"batch": many["batch"][:10]}, auth=WEB).json() == {"accepted": 10}
    assert len(_records(topic)) == before + 10


def test_cors_lets_configured_origins_in_and_refuses_others(collector) -> None:
    base, _ = collector
    pre = httpx.options(f"{base}/v1/batch", headers={"Origin": "http://shop.test", "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://shop.test"
    msg = {"messageId": "m-cors", "event": "x", "userId": "u1"}
    r = httpx.post(f"{base}/v1/track", json=msg, auth=WEB, headers={"Origin": "http://evil.test"})
    assert r.status_code == 403 and "collector.cors_origins" in r.json()["error"]
    r = httpx.post(f"{base}/v1/track", json=msg, auth=WEB, headers={"Origin": "http://shop.test"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://shop.test"


def test_sdk_and_health_are_served(collector) -> None:
    base, _ = collector
    r = httpx.get(f"{base}/sdk/zt.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/javascript")
    assert "navigator.sendBeacon" in r.text
    assert httpx.get(f"{base}/healthz").json()["kafka"] == "up"


def test_kafka_unreachable_is_503_with_retry_after() -> None:
    closed = f"127.0.0.1:{free_port()}"
    cfg = {"kafka": {"bootstrap": closed}, "collector": {"topic": collector_topic(), "write_keys": KEYS,
                                                          "delivery_timeout_ms": 1500, "retry_after_s": 7}}
    with running_collector(cfg) as base:
        msg = {"messageId": "m-down", "event": "x", "userId": "u1"}
        r = httpx.post(f"{base}/v1/track", json=msg, auth=WEB, timeout=10)
        assert r.status_code == 503 and r.headers["Retry-After"] == "7"
        assert r.json()["cause"] in ("kafka_down", "delivery_failed", "timeout")
        assert "send it again after Retry-After" in r.json()["error"]
        assert httpx.get(f"{base}/healthz").json()["kafka"] == "down"
        metrics = httpx.get(f"{base}/metrics").text
        assert sum(_metric(metrics, "zhongtai_collector_unavailable_total", cause=c)
                   for c in ("kafka_down", "delivery_failed", "timeout")) == 1
        assert _metric(metrics, "zhongtai_collector_accepted_total", source="web") == 0


def test_a_full_producer_queue_is_503_at_once() -> None:
    topic = collector_topic()
    with running_collector({"collector": {"topic": topic, "write_keys": KEYS, "queue_max_events": 100}}) as base:
        batch = [{"type": "track", "messageId": f"q{i}", "event": "x", "userId": f"u{i}"} for i in range(150)]
        r = httpx.post(f"{base}/v1/batch", json={"batch": batch}, auth=WEB)
        assert (r.status_code, r.json()["cause"], r.headers["Retry-After"]) == (503, "queue_full", "5")
        assert "producer's queue is full (100 events)" in r.json()["error"]
        # what was queued before the queue filled is still delivered; the retry (smaller) is accepted, and the
        # job counts each messageId once
        assert httpx.post(f"{base}/v1/batch", json={"batch": batch[:100]}, auth=WEB).json() == {"accepted": 100}
    ids = [json.loads(m.value())["event_id"] for m in _records(topic)]
    assert set(ids) == {f"q{i}" for i in range(100)} and len(ids) == 200


class _Forwarder:
    """A TCP forwarder 127.0.0.1:``port`` → Kafka's bootstrap, started and stopped by the test (the broker's
    metadata still names its own address, so only the bootstrap connection goes through here)."""

    def __init__(self, port: int, target: str) -> None:
        host, _, tport = target.rpartition(":")
        self.target = (host, int(tport))
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", port), self._handler(), bind_and_activate=False)
        self.server.allow_reuse_address = True
        self.server.daemon_threads = True

    def _handler(self) -> type:
        target = self.target

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                upstream = socket.create_connection(target)

                def pump(a: socket.socket, b: socket.socket) -> None:
                    try:
                        while data := a.recv(65536):
                            b.sendall(data)
                    except OSError:
                        pass
                    finally:
                        b.close()

                t = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
                t.start()
                pump(self.request, upstream)
                t.join()

        return Pipe

    def start(self) -> None:
        self.server.server_bind()
        self.server.server_activate()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_kafka_down_then_back_is_503_then_200_without_a_restart() -> None:
    settings = load_settings()
    topic = collector_topic()
    create_topics(settings, [topic])
    port = free_port()
    forwarder = _Forwarder(port, settings.kafka.bootstrap)
    cfg = {"kafka": {"bootstrap": f"127.0.0.1:{port}"},
           "collector": {"topic": topic, "write_keys": KEYS, "delivery_timeout_ms": 1500}}
    with running_collector(cfg) as base:
        msg = {"messageId": "m-back", "event": "x", "userId": "u1"}
        r = httpx.post(f"{base}/v1/track", json=msg, auth=WEB, timeout=10)
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert r.json()["cause"] in ("kafka_down", "delivery_failed")
        assert httpx.get(f"{base}/healthz").json()["kafka"] == "down"  # until a probe gets an answer
        forwarder.start()
        try:
            deadline = time.monotonic() + 20
            while httpx.get(f"{base}/healthz").json()["kafka"] != "up":
                assert time.monotonic() < deadline, "the collector did not notice Kafka coming back"
                time.sleep(0.2)
            r = httpx.post(f"{base}/v1/track", json=msg, auth=WEB, timeout=10)
            assert (r.status_code, r.json()) == (200, {"accepted": 1})
        finally:
            forwarder.stop()
    assert [json.loads(m.value())["event_id"] for m in _records(topic)] == ["m-back"]


def test_namespace_qualifies_the_topic() -> None:
    topic = collector_topic()
    with running_collector({"collector": {"topic": topic, "write_keys": KEYS}}, namespace="ztcol") as base:
        assert httpx.post(f"{base}/v1/track", json={"messageId": "m-ns", "event": "x", "userId": "u1"},
                          auth=WEB).json() == {"accepted": 1}
    assert [json.loads(m.value())["event_id"] for m in _records(f"ztcol.{topic}")] == ["m-ns"]


def test_several_worker_processes_share_the_port_and_sum_their_metrics() -> None:
    topic = collector_topic()
    with running_collector({"collector": {"topic": topic, "write_keys": KEYS}}, namespace="ztcolw", workers=2) as base:
        for i in range(20):
            r = httpx.post(f"{base}/v1/track", json={"messageId": f"w{i}", "event": "x", "userId": f"u{i}"}, auth=WEB)
            assert r.json() == {"accepted": 1}
        # a new connection each time: the kernel hands them to either process
        processes = {httpx.get(f"{base}/healthz").json()["process"] for _ in range(60)}
        assert len(processes) == 2
        metrics = httpx.get(f"{base}/metrics").text
        assert _metric(metrics, "zhongtai_collector_accepted_total", source="web") == 20  # the sum of both
    assert sorted(json.loads(m.value())["event_id"] for m in _records(f"ztcolw.{topic}")) == sorted(
        f"w{i}" for i in range(20))


def test_the_producer_is_idempotent_and_waits_for_every_replica() -> None:
    cfg = producer_config(load_settings(env={}))
    assert (cfg["enable.idempotence"], cfg["acks"], cfg["max.in.flight.requests.per.connection"]) == (True, "all", 5)
    assert cfg["message.timeout.ms"] == 10_000 and cfg["queue.buffering.max.messages"] == 100_000
