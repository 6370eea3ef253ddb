"""Real services for the channel worker integration tests (no tests here): a recording HTTP
server, a recording SMTP server (aiosmtpd), fresh topics/prefixes and topic readers.

Needs the local stack (``zhongtai stack up``): Kafka 127.0.0.1:9092, Redis 127.0.0.1:6390.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import orjson
import yaml

from config.settings import Settings
from operators.messages import Action
from tests.helpers import Names, free_port, make_settings


# ---- HTTP ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    t: float  # time.monotonic() on arrival
    status: int


class LocalHttpServer:
    """A server on 127.0.0.1 (``self.server``, a ThreadingHTTPServer a subclass builds) served by a daemon thread
    while the ``with`` block runs."""

    server: ThreadingHTTPServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> Self:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class RecordingHttpServer(LocalHttpServer):
    """``POST`` endpoint on 127.0.0.1 that records every request and answers ``status`` (or, per
    idempotency key, the codes queued in ``plan`` first). ``delay_s`` slows every answer."""

    def __init__(self, status: int = 200, delay_s: float = 0.0, plan: dict[str, list[int]] | None = None) -> None:
        self.status, self.delay_s = status, delay_s
        self.plan = {k: list(v) for k, v in (plan or {}).items()}
        self.requests: list[HttpRequest] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                t = time.monotonic()
                key = self.headers.get("Idempotency-Key", "")
                with outer.lock:
                    queued = outer.plan.get(key)
                    code = queued.pop(0) if queued else outer.status
                    outer.requests.append(HttpRequest(self.path, dict(self.headers.items()), body, t, code))
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                payload = orjson.dumps({"id": f"prov-{key}"} if code < 300 else {"error": "nope"})
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client killed mid-request (the kill tests) is expected here

        self.server = Server(("127.0.0.1", 0), Handler)

    def accepted(self) -> list[HttpRequest]:
        with self.lock:
            return [r for r in self.requests if r.status < 300]

    def accepted_keys(self) -> Counter[str]:
        return Counter(r.headers.get("Idempotency-Key", "") for r in self.accepted())


# ---- SMTP ---------------------------------------------------------------------------------------
@dataclass
class SmtpRecorder:
    """aiosmtpd handler: ``reject`` recipients get 550, ``defer_once`` recipients 451 the first time."""

    reject: set[str] = field(default_factory=set)
    defer_once: set[str] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return "550 5.1.1 no such user"
        if address in self.defer_once and address not in self.deferred:
            self.deferred.append(address)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content, policy=default))
        return "250 Message accepted for delivery"


def smtp_controller(handler: SmtpRecorder):
    """An aiosmtpd server on a free 127.0.0.1 port (``start()``/``stop()``; ``.port``)."""
    from aiosmtpd.controller import Controller

    return Controller(handler, hostname="127.0.0.1", port=free_port())


# ---- Kafka / Redis ------------------------------------------------------------------------------
def worker_settings(names: Names, contacts_file: Path, **worker: Any) -> Settings:
    """Settings with fresh topics (``zt.t<tag>.actions.<channel>``, ``zt.t<tag>.delivery``), Redis
    prefix and group, short timeouts and the given ``worker`` overrides."""
    base = {
        "group": names.group, "lease_ms": 3_000, "backoff_base_ms": 50, "backoff_max_ms": 200,
        "backoff_jitter": 0.0, "max_attempts": 3, "batch_size": 50, "poll_timeout_ms": 100,
        "transaction_timeout_ms": 20_000, "default_rate": {"per_s": 10_000, "burst": 10_000},
        "contacts": {"kind": "file", "path": str(contacts_file), "timeout_s": 0.5},
        "smtp": {"timeout_s": 1.0}, "webhook": {"timeout_s": 1.0, "signing_secret": "whsec"},
        "sms": {"timeout_s": 1.0}, "push": {"timeout_s": 1.0}, "coupon": {"timeout_s": 1.0},
    }
    for k, v in worker.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return make_settings(
        kafka={"topics": {"actions_prefix": f"zt.t{names.tag}.actions.", "delivery": f"zt.t{names.tag}.delivery"}},
        redis={"prefix": names.prefix}, worker=base,
    )


def settings_yaml(settings: Settings, path: Path) -> Path:
    """The settings as a config file for a ``zhongtai worker`` subprocess (secrets revealed)."""
    from config.settings import settings_to_json

    data = orjson.loads(settings_to_json(settings))
    path.write_text(yaml.safe_dump({k: data[k] for k in ("kafka", "redis", "worker")}), encoding="utf-8")
    return path


def topics_of(settings: Settings, channel: str) -> list[str]:
    from zhongtai.services.workers.worker import WorkerTopics

    t = WorkerTopics.of(settings.kafka, channel)
    return [t.actions, t.dlq, t.delivery]


def create(settings: Settings, topics: list[str], partitions: int = 2) -> None:
    from confluent_kafka.admin import AdminClient

    from zhongtai.devtools.stack import create_topics

    create_topics(settings, topics, partitions=partitions)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # metadata propagates asynchronously
        md = admin.list_topics(timeout=10).topics
        if all(t in md and len(md[t].partitions) == partitions and not md[t].error for t in topics):
            return
        time.sleep(0.1)
    raise AssertionError(f"topics {topics} did not appear within 30 s")


def cleanup(settings: Settings, topics: list[str]) -> None:
    """Delete ``topics`` and every Redis key of ``settings.redis.prefix``, which must be a test's own (never the
    default prefix the shared stack's runs use)."""
    from confluent_kafka.admin import AdminClient

    from config.settings import RedisSettings
    from connectors.channels.redis_state import redis_client

    if settings.redis.prefix == RedisSettings().prefix:
        raise ValueError(f"cleanup would delete every key of the default Redis prefix {settings.redis.prefix!r} on the "
                         "shared stack: give the test's settings a fresh prefix (worker_settings does)")

    AdminClient({"bootstrap.servers": settings.kafka.bootstrap}).delete_topics(topics, operation_timeout=10)
    r = redis_client(settings.redis)
    keys = list(r.scan_iter(match=f"{settings.redis.prefix}:*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


def produce(settings: Settings, topic: str, values: list[bytes | Action], partitions: int = 2) -> None:
    """Write action messages keyed by person id (raw bytes go to partition 0)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": settings.kafka.bootstrap, "enable.idempotence": True})
    for v in values:
        if isinstance(v, Action):
            p.produce(topic, value=orjson.dumps(v.to_json()), key=v.person_id.encode())
        else:
            p.produce(topic, value=v, partition=0)
    assert p.flush(30) == 0


def read_topic(settings: Settings, topic: str, timeout_s: float = 20.0) -> list[tuple[bytes | None, bytes, dict]]:
    """Every committed record of ``topic`` (read_committed): ``(key, value, headers)``."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"reader-{time.time_ns()}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    eof: set[int] = set()
    out = []
    deadline = time.monotonic() + timeout_s
    while len(eof) < len(parts) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                eof.add(m.partition())
            continue
        out.append((m.key(), m.value(), {k: v.decode() for k, v in (m.headers() or [])}))
    c.close()
    assert len(eof) == len(parts), f"reading {topic} did not reach its end within {timeout_s} s"
    return out


def receipts(settings: Settings) -> list[dict]:
    return [orjson.loads(v) for _, v, _ in read_topic(settings, settings.kafka.topics.delivery)]


def write_contacts(path: Path, contacts: dict[str, dict]) -> Path:
    path.write_text(yaml.safe_dump(contacts), encoding="utf-8")
    return path


def make_action(i: int, channel: str, person: str | None = None, **params: Any) -> Action:
    return Action(action_id=f"{i:032x}", rule_id="r1", rule_version=3, person_id=person or f"p{i}",
                  channel=channel, template="welcome", params=params, campaign="c1",
                  trigger={"type": "event", "event_id": f"e{i}", "ts_ms": 0}, ts_ms=0, priority=10)


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` over HTTP as ``{'name{labels}': value}`` (zhongtai_worker_* samples only)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("zhongtai_worker_") and not s.name.endswith("_created"):
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "channel")
                out[f"{s.name}{{{labels}}}"] = s.value
    return out
