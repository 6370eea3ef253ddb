"""Shared helpers of the integration tests: fresh names, running the job, comparing with the oracle."""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import load_settings
from config.settings import Settings

PROFILE_FIELDS = (
    "first_seen", "last_seen", "last_purchase", "events", "views", "carts", "purchases", "gmv",
    "views_1h", "views_24h", "views_7d", "carts_7d", "purchases_30d", "gmv_30d", "purchases_90d", "gmv_90d",
)
COUNTER_FIELDS = ("views", "carts", "purchases", "events", "persons", "revenue")

#: The repository's root and the tests' data folder, whatever tier folder (tests/unit, tests/pipeline,
#: tests/integration) a test module sits in: import these instead of counting ``Path(__file__).parents``.
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


@dataclass(frozen=True)
class Names:
    """Fresh Kafka/Redis/HBase/Flink names for one test, so tests never see each other's data."""

    tag: str

    @property
    def topic_prefix(self) -> str:
        return f"zt.t{self.tag}.events."

    @property
    def topic_pattern(self) -> str:
        return f"zt\\.t{self.tag}\\.events\\..*"

    @property
    def dlq(self) -> str:
        return f"zt.t{self.tag}.dlq"

    @property
    def prefix(self) -> str:
        return f"t{self.tag}"

    @property
    def group(self) -> str:
        return f"g{self.tag}"

    @property
    def job(self) -> str:
        return f"job{self.tag}"


def fresh_names() -> Names:
    return Names(uuid.uuid4().hex[:10])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(**overrides: Any) -> Settings:
    """The default settings with ``overrides``; the control and change topics are fresh per call (every
    job run reads its control topic from the start, so tests never see each other's messages)."""
    tag = uuid.uuid4().hex[:10]
    kafka = dict(overrides.pop("kafka", {}))
    topics = {"control": f"zt.c{tag}.control", "control_results": f"zt.c{tag}.control.results",
              "tag_changes": f"zt.c{tag}.tags.changes", "identity_changes": f"zt.c{tag}.identity.changes",
              "delivery": f"zt.c{tag}.delivery", "audit": f"zt.c{tag}.audit",
              **kafka.pop("topics", {})}
    return load_settings(overrides={**overrides, "kafka": {**kafka, "topics": topics}})


def load_expected(path: Any) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _norm_counter(d: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k in COUNTER_FIELDS:
        v = d.get(k, 0 if k != "revenue" else "0.00")
        out[k] = str(v)
    return out


def counter_mismatches(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, str]]) -> list[str]:
    """Field-by-field differences between the oracle's counters and Redis (missing = zero)."""
    bad = []
    for key in sorted(set(expected) | set(actual)):
        e = _norm_counter(expected.get(key, {}))
        a = _norm_counter(actual.get(key, {}))
        if e != a:
            bad.append(f"{key}: expected {e} got {a}")
    return bad


def profile_mismatches(expected: dict[str, dict[str, Any]], read: Any) -> list[str]:
    """``read(person) -> summary`` compared with the oracle's profiles on PROFILE_FIELDS."""
    bad = []
    for person, exp in sorted(expected.items()):
        got = read(person)
        for f in PROFILE_FIELDS:
            ev, gv = exp.get(f), got.get(f)
            if ev is None and gv is None:
                continue
            if str(ev) != str(gv):
                bad.append(f"{person}.{f}: expected {ev} got {gv}")
    return bad


def read_topics(settings: Settings, topics: list[str], idle_polls: int = 3) -> list[Any]:
    """Every committed record of ``topics`` (read_committed, from the start), as confluent-kafka
    messages; stops after ``idle_polls`` empty one-second polls."""
    from confluent_kafka import Consumer, TopicPartition

    from connectors.kafka_security import client_config

    c = Consumer({**client_config(settings.kafka), "group.id": f"chk-{uuid.uuid4().hex[:8]}",
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    parts = []
    for t in topics:
        meta = c.list_topics(t, timeout=10).topics[t]
        parts += [TopicPartition(t, p, 0) for p in meta.partitions]
    c.assign(parts)
    out: list[Any] = []
    idle = 0
    while idle < idle_polls:
        msgs = c.consume(1000, timeout=1.0)
        if not msgs:
            idle += 1
            continue
        out += [m for m in msgs if not m.error()]
    c.close()
    return out


def event_record(eid: str, etype: str, ids: str | dict[str, str], ts: int, **props: object) -> bytes:
    """One envelope as a producer writes it; ``ids`` a user id or the whole ``ids`` object."""
    import orjson

    return orjson.dumps({"event_id": eid, "event_type": etype, "ts": ts,
                         "ids": ids if isinstance(ids, dict) else {"user_id": ids}, "props": props})


def wait_until(what: str, check: Any, timeout: float = 90.0, show: Any = None) -> Any:
    """Poll ``check()`` once a second until it is truthy and return that; AssertionError naming ``what``, the
    last value and ``show()`` after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r}; {show() if show else ''})")
