"""A store-log stream for the service fault tests (no tests here): transactions of store rows shaped the way the
job writes them (absolute values per key, growing, in order; identifiers moving between persons), the state
they must leave in Redis and HBase (the oracle), and a transactional producer that survives a broker restart.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from connectors.redis_store import StoreRow, minute_label
from connectors.store_log import encode_row

M0 = 29_000_000  # an epoch minute (2025-02-20)


def _row(kind: str, key: str, bucket: int = 0, n: tuple[int, ...] = (), amount: Decimal = Decimal(0),
         t: tuple[int, int, int] = (0, 0, 0), s1: str | None = None) -> StoreRow:
    n1, n2, n3, n4, n5 = (*n, 0, 0, 0, 0, 0)[:5]
    return StoreRow(kind, key, bucket, n1, n2, n3, n4, n5, amount, *t, s1)


@dataclass
class StoreStream:
    """``txs``: one list of rows per checkpoint; the rest is what applying all of them must leave."""

    txs: list[list[StoreRow]] = field(default_factory=list)
    buckets: dict[tuple[str, int], list[Any]] = field(default_factory=dict)  # (person, minute) → bucket
    counters: dict[int, list[Any]] = field(default_factory=dict)  # minute → views carts purchases events persons rev
    ids: dict[str, str] = field(default_factory=dict)  # identifier → person
    valid: int = 0
    unique: int = 0

    @property
    def rows(self) -> int:
        return sum(len(t) for t in self.txs)


def make_stream(n_tx: int, persons: int = 30, per_tx: int = 4) -> StoreStream:
    """``n_tx`` checkpoints of ``per_tx`` events each: per event a person bucket (``p``), an identifier that
    (re)maps to the person (``i``, 37 devices over 30 persons: they move), an edge record (``e``) and the
    minute's live counter (``c``); per checkpoint an action audit row (``ax``), the action counter (``ac``)
    and the totals (``s``)."""
    s = StoreStream()
    seen: dict[int, set[str]] = {}
    for t in range(n_tx):
        rows: list[StoreRow] = []
        minute = M0 + t // 10
        ts = 0
        for j in range(per_tx):
            e = t * per_tx + j
            p, ident = f"P{e % persons}", f"device_id:d{e % (persons + 7)}"
            kind = ("view", "view", "cart", "purchase")[(t + j) % 4]
            ts = minute * 60_000 + (t % 10) * 5_000 + j
            b = s.buckets.setdefault((p, minute), [0, 0, 0, 0, Decimal(0), ts, ts, 0])
            b[0] += kind == "view"
            b[1] += kind == "cart"
            b[2] += kind == "purchase"
            b[3] += 1
            if kind == "purchase":
                b[4] += Decimal("9.90")
                b[7] = ts
            b[6] = ts
            rows.append(_row("p", p, minute, tuple(b[:4]), b[4], (b[5], b[6], b[7])))
            s.ids[ident] = p
            rows.append(_row("i", ident, s1=p))
            rows.append(_row("e", ident, ts, (1,), s1=f"{p}|link|ev{e}"))
            seen.setdefault(minute, set()).add(p)
            c = s.counters.setdefault(minute, [0, 0, 0, 0, 0, Decimal(0)])
            c[0] += kind == "view"
            c[1] += kind == "cart"
            c[2] += kind == "purchase"
            c[3] += 1
            c[4] = len(seen[minute])
            c[5] += Decimal("9.90") if kind == "purchase" else 0
            rows.append(_row("c", "all", minute, tuple(c[:5]), c[5]))
            s.valid += 1
            s.unique += 1 if e % 9 else 0
        rows.append(_row("ax", f"a{t:04d}", ts, (1,), s1=f'{{"action_id": "a{t:04d}"}}'))
        rows.append(_row("ac", "r1|email", n=(t + 1,)))
        rows += [_row("s", "valid", n=(s.valid,)), _row("s", "unique", n=(s.unique,))]
        s.txs.append(rows)
    return s


def _cents(d: Decimal) -> int:
    return int(d * 100)


def redis_mismatches(store: Any, s: StoreStream) -> list[str]:
    """Differences between a ``RedisStore`` and the stream's oracle (totals, action counters, live counters,
    identifier keys and sets, profile totals)."""
    bad: list[str] = []
    stats = store.stats()
    if (stats.get("valid"), stats.get("unique")) != (s.valid, s.unique):
        bad.append(f"stats {stats} != valid {s.valid} unique {s.unique}")
    if store.action_counters() != {"r1|email": len(s.txs)}:
        bad.append(f"action counters {store.action_counters()} != {len(s.txs)}")
    for minute, c in sorted(s.counters.items()):
        want = {"views": str(c[0]), "carts": str(c[1]), "purchases": str(c[2]), "events": str(c[3]),
                "persons": str(c[4]), "revenue": str(c[5].quantize(Decimal("0.01")))}
        got = store.counters("all", minute_label(minute))
        if got != want:
            bad.append(f"counter {minute}: {got} != {want}")
    members: dict[str, list[str]] = {}
    for ident, p in s.ids.items():
        members.setdefault(p, []).append(ident)
        if store.person_of(ident) != p:
            bad.append(f"id {ident}: {store.person_of(ident)} != {p}")
    totals: dict[str, Counter[str]] = {}
    for (p, _m), b in s.buckets.items():
        t = totals.setdefault(p, Counter())
        t.update({"views": b[0], "carts": b[1], "purchases": b[2], "events": b[3], "gmv_cents": _cents(b[4])})
    for p, t in sorted(totals.items()):
        if store.identifiers(p) != sorted(members.get(p, [])):
            bad.append(f"ids of {p}: {store.identifiers(p)} != {sorted(members.get(p, []))}")
        h = store.profile_hash(p)
        got_t = {k: int(h.get(k, 0)) for k in t}
        if got_t != dict(t):
            bad.append(f"profile {p}: {got_t} != {dict(t)}")
    return bad


def hbase_mismatches(hb: Any, s: StoreStream) -> list[str]:
    """Differences between an ``HBaseStore`` and the oracle: every person's minute buckets, every identifier's
    person, every edge record, every action audit row."""
    bad: list[str] = []
    want: dict[str, dict[str, str]] = {}
    for (p, m), b in s.buckets.items():
        want.setdefault(p, {})[f"m:{m}"] = f"{b[0]},{b[1]},{b[2]},{b[3]},{_cents(b[4])},{b[5]},{b[6]},{b[7]}"
    for p, buckets in sorted(want.items()):
        if hb.profile_buckets(p) != buckets:
            bad.append(f"buckets of {p}: {hb.profile_buckets(p)} != {buckets}")
    edges: Counter[str] = Counter()
    for tx in s.txs:
        edges.update(r.key for r in tx if r.kind == "e")
    for ident, p in sorted(s.ids.items()):
        if hb.person_of(ident) != p:
            bad.append(f"identity {ident}: {hb.person_of(ident)} != {p}")
        if len(hb.edges(ident)) != edges[ident]:
            bad.append(f"edges of {ident}: {len(hb.edges(ident))} != {edges[ident]}")
    for t in range(len(s.txs)):
        if hb.action(f"a{t:04d}").get("status") != "emitted":
            bad.append(f"action a{t:04d}: {hb.action(f'a{t:04d}')}")
    return bad


def send_transaction(producer: Any, topic: str, rows: list[StoreRow], timeout_s: float = 90.0) -> int:
    """Produce ``rows`` in one Kafka transaction; a commit that fails while the broker is away is retried, an
    aborted one is sent again (read_committed readers see it once). Returns the attempts it took."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout_s
    for attempt in range(1, 1_000):
        producer.begin_transaction()
        for r in rows:
            producer.produce(topic, key=r.key.encode(), value=encode_row(r))
        while True:
            try:
                producer.commit_transaction(30)
                return attempt
            except KafkaException as e:
                err = e.args[0]
                if time.monotonic() > deadline or err.fatal():
                    raise
                if err.txn_requires_abort():
                    producer.abort_transaction(30)
                    break
                if not err.retriable():
                    raise
                time.sleep(0.5)
    raise AssertionError("unreachable")
