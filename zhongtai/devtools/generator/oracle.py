"""Ground truth: an independent reference implementation of docs/semantics.md.

It reads records' bytes and Kafka timestamps only (never the generator's ``kind``), parses them with
the standard library, and computes what the job must write: the pipeline totals, the live minute
counters and the person profiles, keyed exactly like the Redis key suffixes.

Order: feed the records of each (topic, partition) in offset order. Everything here is independent of
the interleaving of partitions, except "first read wins" for an event_id seen in two partitions (the
generator keeps duplicates in the partition of their original). Dedup assumes every record is read
within ``job.dedup_ttl_ms`` of the first (processing time is not modelled).

Decoding (bytes → event or DLQ reason) is :mod:`operators.envelope`'s, the job's Python reference.
Readings of the contract where docs/semantics.md leaves room for the outputs (tests/unit/test_oracle.py pins each):
  * A person's ``first_seen``/``last_seen``/``last_purchase`` are the min/max event times, not the
    first/last read.
  * Bucket fields (the doc names them only ``b:*``): ``b:views:m:<YYYYMMDDHHMM>``,
    ``b:views:h:<YYYYMMDDHH>``, ``b:carts:h:<YYYYMMDDHH>``, ``b:purchases:d:<YYYYMMDD>``,
    ``b:gmv:d:<YYYYMMDD>``; only non-zero buckets inside the longest window of their series as of
    ``last_seen`` (60 minutes, 168 hours, 90 days) are kept.
  * Output always carries every counter and profile field (zeros included) except ``last_purchase``
    for a person without purchases; ``stats`` has ``dlq:<reason>`` only for reasons that occurred.
  * Computed traits (``schema.traits``, docs/schema.md): ``result()["traits"]`` person → name → value, as of
    the person's ``last_seen``, from the matching events themselves (the filter evaluated by the expression
    language, not the job's SQL); a trait with no value (min / max / first / last of no event) is absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from config.schema import EventSchema
from config.settings import JobSettings, PiiSettings
from operators.envelope import (
    _EPOCH,
    CENT,
    DAY,
    HOUR,
    MINUTE,
    ZERO,
    DecodedFields,
    ValidEvent,
    compact_json,
    decode,
    decode_full,
)
from operators.envelope import Pseudonyms as _Pseudonyms
from operators.scopes import scope_key

__all__ = ["DecodedFields", "IdentityExpectation", "Oracle", "ValidEvent", "compact_json", "decode", "decode_full", "expected", "expected_identity", "observations"]


@dataclass(slots=True)
class _Counter:
    views: int = 0
    carts: int = 0
    purchases: int = 0
    revenue: Decimal = ZERO
    events: int = 0
    persons: set[str] = field(default_factory=set)

    def add(self, e: ValidEvent) -> None:
        self.events += 1
        self.persons.add(e.person)
        if e.event_type == "page_view":
            self.views += 1
        elif e.event_type == "add_to_cart":
            self.carts += 1
        elif e.event_type == "purchase":
            self.purchases += 1
            self.revenue += e.amount

    def as_dict(self) -> dict[str, Any]:
        return {
            "views": self.views,
            "carts": self.carts,
            "purchases": self.purchases,
            "revenue": _money(self.revenue),
            "persons": len(self.persons),
            "events": self.events,
        }


@dataclass(slots=True)
class _Profile:
    first_seen: int
    last_seen: int
    last_purchase: int | None = None
    events: int = 0
    views: int = 0
    carts: int = 0
    purchases: int = 0
    gmv: Decimal = ZERO
    views_m: dict[int, int] = field(default_factory=dict)
    views_h: dict[int, int] = field(default_factory=dict)
    carts_h: dict[int, int] = field(default_factory=dict)
    purchases_d: dict[int, int] = field(default_factory=dict)
    gmv_d: dict[int, Decimal] = field(default_factory=dict)

    def add(self, e: ValidEvent) -> None:
        ts = e.ts
        self.first_seen = min(self.first_seen, ts)
        self.last_seen = max(self.last_seen, ts)
        self.events += 1
        if e.event_type == "page_view":
            self.views += 1
            m, h = ts // MINUTE, ts // HOUR
            self.views_m[m] = self.views_m.get(m, 0) + 1
            self.views_h[h] = self.views_h.get(h, 0) + 1
            if len(self.views_m) > 240:  # bound memory: older minutes can never be in the window again
                floor = self.last_seen // MINUTE - 59
                self.views_m = {k: v for k, v in self.views_m.items() if k >= floor}
        elif e.event_type == "add_to_cart":
            self.carts += 1
            h = ts // HOUR
            self.carts_h[h] = self.carts_h.get(h, 0) + 1
        elif e.event_type == "purchase":
            self.purchases += 1
            self.gmv += e.amount
            self.last_purchase = ts if self.last_purchase is None else max(self.last_purchase, ts)
            d = ts // DAY
            self.purchases_d[d] = self.purchases_d.get(d, 0) + 1
            self.gmv_d[d] = self.gmv_d.get(d, ZERO) + e.amount

    def as_dict(self) -> dict[str, Any]:
        m, h, d = self.last_seen // MINUTE, self.last_seen // HOUR, self.last_seen // DAY

        def window(buckets: dict[int, Any], end: int, n: int, zero: Any = 0) -> Any:
            return sum((v for k, v in buckets.items() if end - n < k <= end), zero)

        out: dict[str, Any] = {"first_seen": self.first_seen, "last_seen": self.last_seen}
        if self.last_purchase is not None:
            out["last_purchase"] = self.last_purchase
        out.update(
            events=self.events,
            views=self.views,
            carts=self.carts,
            purchases=self.purchases,
            gmv=_money(self.gmv),
            views_1h=window(self.views_m, m, 60),
            views_24h=window(self.views_h, h, 24),
            views_7d=window(self.views_h, h, 168),
            carts_7d=window(self.carts_h, h, 168),
            purchases_30d=window(self.purchases_d, d, 30),
            gmv_30d=_money(window(self.gmv_d, d, 30, ZERO)),
            purchases_90d=window(self.purchases_d, d, 90),
            gmv_90d=_money(window(self.gmv_d, d, 90, ZERO)),
        )
        for series, buckets, unit, end, n, label in (
            ("views", self.views_m, "m", m, 60, minute_label),
            ("views", self.views_h, "h", h, 168, hour_label),
            ("carts", self.carts_h, "h", h, 168, hour_label),
            ("purchases", self.purchases_d, "d", d, 90, day_label),
            ("gmv", self.gmv_d, "d", d, 90, day_label),
        ):
            for k in sorted(buckets):
                if end - n < k <= end and buckets[k]:
                    v = buckets[k]
                    out[f"b:{series}:{unit}:{label(k)}"] = _money(v) if isinstance(v, Decimal) else v
        return out


def _trait(t: Any, events: list[tuple[int, str, Any]], as_of: int) -> Any:
    """One trait's value from its matching events, directly (the reference of ``operators.traits``)."""
    w = t.spec.window_spec()
    if w is not None:
        div = {"m": MINUTE, "h": HOUR, "d": DAY}[w[0]]
        end = as_of // div
        events = [x for x in events if end - w[1] < x[0] // div <= end]
    a = t.spec.aggregate
    if a == "count":
        return len(events)
    if a == "distinct_count":
        return len({x[2] for x in events})
    nums = [x[2] for x in events]
    v: Decimal
    if a == "sum":
        v = sum(nums, ZERO)
    elif not events:
        return None
    elif a in ("min", "max"):
        v = min(nums) if a == "min" else max(nums)
    else:
        pick = min(events) if a == "first" else max(events)
        return pick[2]
    if t.spec.prop == "amount":
        return _money(v)
    if t.kind == "integer" and v == v.to_integral_value():
        return int(v)
    return format(v.normalize(), "f") if v else "0"


def _money(v: Decimal) -> str:
    return str(v.quantize(CENT))


def minute_label(minute: int) -> str:
    return (_EPOCH + timedelta(minutes=minute)).strftime("%Y%m%d%H%M")


def hour_label(hour: int) -> str:
    return (_EPOCH + timedelta(hours=hour)).strftime("%Y%m%d%H")


def day_label(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y%m%d")


class Oracle:
    """Feed records one by one (:meth:`feed`), then read :meth:`result`.

    Holds the set of event_ids seen, one counter per (campaign, channel, minute) and per minute, and one
    profile per person (bounded bucket maps).
    """

    def __init__(self, job: JobSettings | None = None, pii: PiiSettings | None = None,
                 person_of: Callable[[Any], str] | None = None, schema: EventSchema | None = None) -> None:
        self.job = job or JobSettings()
        #: ``schema``: the declared event schema the job runs with (its prop checks reject records too).
        self._pseudonyms = _Pseudonyms(pii or PiiSettings(), None, schema)
        #: Profile key of a valid event (default: its anchor, ``ValidEvent.person``); the identity tests
        #: pass the person id the guard-railed batch resolution gives the anchor.
        self._person_of = person_of
        self._seen: set[str] = set()
        self.received = 0
        self.valid = 0
        self.dlq: dict[str, int] = {}
        self._counters: dict[tuple[str, int], _Counter] = {}
        self._profiles: dict[str, _Profile] = {}
        from operators.traits import compile_traits

        #: the declared traits and, per person and trait, the matching events' (ts, event_id, value)
        self._traits = compile_traits(schema) if schema is not None and schema.traits else ()
        self._trait_events: dict[str, dict[str, list[tuple[int, str, Any]]]] = {}

    def feed(self, value: bytes, timestamp_ms: int) -> str:
        """Account for one record; returns its kind: ``"ok"``, ``"dup"`` or the DLQ reason."""
        self.received += 1
        full = decode_full(value, timestamp_ms, self.job, self._pseudonyms) if self._traits else None
        e = decode(value, timestamp_ms, self.job, self._pseudonyms) if full is None else (
            full if isinstance(full, str) else full.event)
        if isinstance(e, str):
            self.dlq[e] = self.dlq.get(e, 0) + 1
            return e
        self.valid += 1
        if e.event_id in self._seen:
            return "dup"
        self._seen.add(e.event_id)
        minute = e.ts // MINUTE
        for scope in (scope_key(e.campaign, e.channel), "all"):
            c = self._counters.get((scope, minute))
            if c is None:
                c = self._counters[(scope, minute)] = _Counter()
            c.add(e)
        key = self._person_of(e) if self._person_of is not None else e.person
        p = self._profiles.get(key)
        if p is None:
            p = self._profiles[key] = _Profile(first_seen=e.ts, last_seen=e.ts)
        p.add(e)
        if self._traits and isinstance(full, DecodedFields):
            self._add_traits(key, full)
        return "ok"

    def _add_traits(self, key: str, f: DecodedFields) -> None:
        from operators.traits import exact_props

        e = f.event
        props = exact_props(f.props)
        columns = {"amount": e.amount, "ts": e.ts, "item_id": f.item_id, "campaign": e.campaign, "channel": e.channel}
        mine = self._trait_events.setdefault(key, {})
        for t in self._traits:
            if t.matches(e.event_type, props):
                v = t.prop_value(props, columns)
                if v is not None:
                    mine.setdefault(t.name, []).append((e.ts, e.event_id, v))

    def traits(self) -> dict[str, dict[str, Any]]:
        """Person → trait → value as of the person's ``last_seen`` (see the module docstring)."""
        out: dict[str, dict[str, Any]] = {}
        for person, prof in sorted(self._profiles.items()):
            events = self._trait_events.get(person, {})
            vals = {t.name: _trait(t, events.get(t.name, []), prof.last_seen) for t in self._traits}
            out[person] = {k: v for k, v in vals.items() if v is not None}
        return out

    def stats(self) -> dict[str, int]:
        unique = len(self._seen)
        out = {
            "received": self.received,
            "valid": self.valid,
            "unique": unique,
            "duplicates": self.valid - unique,
            "dlq": sum(self.dlq.values()),
        }
        out.update({f"dlq:{r}": n for r, n in sorted(self.dlq.items())})
        return out

    def result(self) -> dict[str, Any]:
        """``{"stats": {...}, "counters": {"<campaign>|<channel>:<YYYYMMDDHHMM>" | "all:<...>": {...}},
        "profiles": {"<person>": {...}}}`` — keys are the Redis key suffixes, values its hash fields."""
        labels: dict[int, str] = {}
        counters = {}
        for (scope, minute), c in sorted(self._counters.items()):
            label = labels.get(minute) or labels.setdefault(minute, minute_label(minute))
            counters[f"{scope}:{label}"] = c.as_dict()
        profiles = {p: prof.as_dict() for p, prof in sorted(self._profiles.items())}
        out = {"stats": self.stats(), "counters": counters, "profiles": profiles}
        if self._traits:
            out["traits"] = self.traits()
        return out


def resolve_persons(
    records: Iterable[Any], job: JobSettings | None = None, pii: PiiSettings | None = None,
    schema: EventSchema | None = None,
) -> tuple[dict[str, str], Callable[[Any], str]]:
    """The guard-railed batch resolution of ``records`` (identifier → person id) and the profile key of
    a valid event under it: the person of its anchor (its strongest clean identifier), as in the job."""
    from config.settings import IdentitySettings
    from operators.identity import IdentityRules, resolve_batch

    rules = IdentityRules.from_settings(IdentitySettings(), pii or PiiSettings())
    resolved = resolve_batch(observations(records, job, pii, schema), rules)

    def person_of(e: Any) -> str:
        return resolved[rules.clean_ids(e.ids)[0]]

    return resolved, person_of


def expected(
    records: Iterable[Any],
    job: JobSettings | None = None,
    pii: PiiSettings | None = None,
    person_of: Callable[[Any], str] | None = None,
    schema: EventSchema | None = None,
) -> dict[str, Any]:
    """The oracle's result for ``records`` (anything with ``.value`` and ``.timestamp_ms``).

    Profiles are keyed by ``person_of(event)`` (default: the event's anchor identifier); the job keys
    them by person id: pass ``resolve_persons(records)[1]``.
    """
    o = Oracle(job, pii, person_of, schema)
    for r in records:
        o.feed(r.value, r.timestamp_ms)
    return o.result()


# --- identity graph ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityExpectation:
    """What the identity graph must compute for a stream, and how good that is.

    ``observations``: one per unique valid event (first read wins), in read order;
    ``truth``: identifier → real person (``identity.identity_truth``); ``resolved``: the guard-railed
    batch resolution (``operators.identity.resolve_batch``), identifier → person id; ``quality``:
    pairwise precision/recall/F1 of ``resolved`` against ``truth``.
    """

    observations: list[Any]
    truth: dict[str, str]
    resolved: dict[str, str]
    quality: Any


def observations(records: Iterable[Any], job: JobSettings | None = None, pii: PiiSettings | None = None,
                 schema: EventSchema | None = None) -> list[Any]:
    """The identity observations of ``records`` (in read order): unique valid events' identifiers."""
    from operators.identity import Observation

    job = job or JobSettings()
    pseudonyms = _Pseudonyms(pii or PiiSettings(), None, schema)
    seen: set[str] = set()
    out = []
    for r in records:
        e = decode(r.value, r.timestamp_ms, job, pseudonyms)
        if isinstance(e, str) or e.event_id in seen:
            continue
        seen.add(e.event_id)
        out.append(Observation(e.ids, e.ts, e.event_id))
    return out


def expected_identity(
    records: Iterable[Any],
    cfg: Any,
    rules: Any = None,
    job: JobSettings | None = None,
    pii: PiiSettings | None = None,
) -> IdentityExpectation:
    """Observations, true persons, guard-railed batch resolution and its quality for ``cfg``'s stream.

    ``rules`` default to ``IdentityRules.from_settings`` of the default config with ``pii`` (so junk
    phone/e-mail values are recognised in their hashed form).
    """
    from config.settings import IdentitySettings
    from operators.identity import IdentityRules, pairwise_quality, resolve_batch

    from .identity import identity_truth

    pii = pii or PiiSettings()
    rules = rules or IdentityRules.from_settings(IdentitySettings(), pii)
    obs = observations(records, job, pii)
    truth = identity_truth(cfg, pii)
    resolved = resolve_batch(obs, rules)
    return IdentityExpectation(obs, truth, resolved, pairwise_quality(resolved, truth))
