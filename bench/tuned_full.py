"""``tuned_full``: the honest peer — a hand-written consumer doing the job's whole work, no fault tolerance.

What a competent team reusing zhongtai's pure library would write instead of running the job: batched
consume (``bench.consumers._Reader``, 10,000 records a batch), the orjson fast decode
(``bench/fastdecode.py``), dedup in a set, the live counters (``bench.consumers.MinuteCounters``), the
identity graph (``operators.identity.in_memory.InMemoryGraph``: ``step`` over dicts, components by cid and an
identifier → cid index, as ``pipelines/identity.py`` keeps them in state), the person-minute buckets and
their moves on merges and splits (what the job's SQL does on the JVM), the person operator's pure step
(``operators.person.on_rows`` / ``on_timer``: profile, tags and, with ``rules=True``, the strategy engine and
the campaign budgets) on each person's rows of the batch, one timer per person fired by a watermark
(newest event time − ``job.watermark_delay_ms``), and one pipelined round trip per batch writing absolute
values in the job's Redis layout: counters, ``stats``, the profile hashes (the fields
``connectors/redis_profile.lua`` keeps: lifetime totals, ``first_seen``/``last_seen``/``last_purchase``, the
``m:``/``hv:``/``hc:``/``dp:``/``dg:`` buckets), the id map (``id:<identifier>`` and the ``ids:<pid>`` sets),
tag memberships and, with rules, the action counters. A crash loses everything in memory.

Tuned, as the job is: the person-minute changes of one batch are coalesced per (person, minute) — one
UPDATE_BEFORE/UPDATE_AFTER pair (or INSERT, DELETE) from the value at the batch's start to its end, as the
job's mini-batch aggregate emits them — and each person's rows of the batch go to ``on_rows`` at once (one
bundle), as the job's bundler sends them.

The same pieces (:class:`PersonMinutes`, :class:`FullWork`) are what ``bench/logic_probe.py`` replays
per event, with a stopwatch around the job's own operators.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from config.settings import Settings
from operators.identity import IdentityRules, Observation
from operators.identity.in_memory import InMemoryGraph
from operators.person import END_OF_INPUT, Output, PersonState, on_rows, on_timer
from operators.profile import DictRows, Profile
from operators.tags import TagSet
from zhongtai.devtools.generator.oracle import MINUTE, ValidEvent

__all__ = ["FullWork", "PersonMinutes", "consume", "diff_id_map", "item_id", "run_tuned_full"]

#: One person-minute bucket as the job's aggregate holds it:
#: (views, carts, purchases, events, gmv_cents, first_ts, last_ts, last_purchase or 0).
Bucket = tuple[int, int, int, int, int, int, int, int]


def _money(cents: int) -> str:
    """Cents as the decimal text Flink's ``CAST(DECIMAL AS STRING)`` gives (``12.50``)."""
    sign, c = ("-", -cents) if cents < 0 else ("", cents)
    return f"{sign}{c // 100}.{c % 100:02d}"


def bucket_row(op: str, minute: int, b: Bucket) -> list[Any]:
    """A ``"m"`` row of ``operators.person`` (``pipelines.person.input_sql``'s columns after the key)."""
    return [b[6], "m", op, minute, b[0], b[1], b[2], b[3], _money(b[4]), b[5], b[6], b[7] or None]


def event_row(e: ValidEvent, item: str | None) -> list[Any]:
    """An ``"e"`` row (the job's ``zt_person_events`` columns; its ``props`` column is null)."""
    return [e.ts, "e", e.event_id, e.ts, None, None, None, None, str(e.amount), None, None, None,
            e.event_type, e.campaign, e.channel, item, None]


def item_id(value: bytes) -> str | None:
    """``props.item_id`` of a raw record as the job's decode reads it (a scalar's text, empty = null)."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    props = obj.get("props") if type(obj) is dict else None
    v = props.get("item_id") if type(props) is dict else None
    if type(v) is str:
        return v or None
    if type(v) in (int, float):
        return str(v)
    return None


def _plus(acc: Bucket | None, b: Bucket) -> Bucket:
    if acc is None:
        return b
    return (acc[0] + b[0], acc[1] + b[1], acc[2] + b[2], acc[3] + b[3], acc[4] + b[4], min(acc[5], b[5]),
            max(acc[6], b[6]), max(acc[7], b[7]))


class PersonMinutes:
    """The job's SQL between the unique events and the person operator, over dicts.

    Per anchor (an event's strongest clean identifier) and minute a bucket (``zt_anchor_minutes``); per
    person and minute the sum of its anchors' buckets (``zt_person_minutes``: the join with the id map).
    When the identity graph moves an anchor to another person (:meth:`move`), its buckets leave the old
    person and join the new one, as the join's retractions do. Every change of a person bucket becomes
    rows for the person operator: per change (``coalesce=False``: INSERT, or UPDATE_BEFORE + UPDATE_AFTER,
    or DELETE — what the aggregate emits without mini-batch), or per (person, minute) from its value at
    the last :meth:`drain` to now (``coalesce=True``: what a mini-batch emits).
    """

    def __init__(self, *, coalesce: bool) -> None:
        self.coalesce = coalesce
        self.anchors: dict[str, dict[int, Bucket]] = {}
        #: anchor → the person its buckets count for (absent: not counted, no person yet)
        self.owner: dict[str, str] = {}
        self.members: dict[str, set[str]] = {}
        self.buckets: dict[str, dict[int, Bucket]] = {}
        self._before: dict[tuple[str, int], Bucket | None] = {}
        self._rows: dict[str, list[list[Any]]] = {}

    def _set(self, pid: str, minute: int, new: Bucket | None) -> None:
        pb = self.buckets.setdefault(pid, {})
        old = pb.get(minute)
        if new is None:
            pb.pop(minute, None)
        else:
            pb[minute] = new
        if self.coalesce:
            self._before.setdefault((pid, minute), old)
            return
        rows = self._rows.setdefault(pid, [])
        if old is None:
            if new is not None:
                rows.append(bucket_row("INSERT", minute, new))
        elif new is None:
            rows.append(bucket_row("DELETE", minute, old))
        else:
            rows.append(bucket_row("UPDATE_BEFORE", minute, old))
            rows.append(bucket_row("UPDATE_AFTER", minute, new))

    def add(self, e: ValidEvent, pid: str | None) -> None:
        """One unique valid event of anchor ``e.person``, which belongs to ``pid`` (None: no person)."""
        anchor, ts, et = e.person, e.ts, e.event_type
        minute = ts // MINUTE
        v = 1 if et == "page_view" else 0
        c = 1 if et == "add_to_cart" else 0
        p = 1 if et == "purchase" else 0
        g = int(e.amount * 100) if p else 0
        lp = ts if p else 0
        ab = self.anchors.get(anchor)
        if ab is None:
            ab = self.anchors[anchor] = {}
        one: Bucket = (v, c, p, 1, g, ts, ts, lp)
        # tuples, not lists: the collector stops tracking tuples of ints (a million buckets cost no GC time)
        ab[minute] = _plus(ab.get(minute), one)
        if pid is None:
            return
        if self.owner.get(anchor) != pid:  # the anchor's first event counted for a person
            self.move(anchor, pid)
            return
        self._set(pid, minute, _plus(self.buckets.get(pid, {}).get(minute), one))

    def move(self, anchor: str, pid: str | None) -> None:
        """Identifier ``anchor`` now belongs to ``pid`` (None: to nobody): move its buckets."""
        rows = self.anchors.get(anchor)
        old_pid = self.owner.get(anchor)
        if old_pid == pid:
            return
        if rows is None:  # not an anchor (yet): its first event reads the map
            return
        if old_pid is not None:
            others = self.members[old_pid]
            others.discard(anchor)
            for minute in rows:
                rest: Bucket | None = None
                for a in others:
                    b = self.anchors[a].get(minute)
                    if b is not None:
                        rest = _plus(rest, b)
                self._set(old_pid, minute, rest)
            if not others:
                del self.members[old_pid]
            del self.owner[anchor]
        if pid is None:
            return
        self.owner[anchor] = pid
        self.members.setdefault(pid, set()).add(anchor)
        pb = self.buckets.setdefault(pid, {})
        for minute, b in rows.items():
            self._set(pid, minute, _plus(pb.get(minute), b))

    def event(self, pid: str, e: ValidEvent, item: str | None) -> None:
        """An event row for the strategy engine (after the person's bucket rows)."""
        self._rows.setdefault(pid, []).append(event_row(e, item))

    def drain(self) -> dict[str, list[list[Any]]]:
        """The rows since the last drain, per person (persons in order of their first row)."""
        if not self._before:
            out, self._rows = self._rows, {}
            return out
        out: dict[str, list[list[Any]]] = {}
        for (pid, minute), old in self._before.items():
            new = self.buckets[pid].get(minute)
            if old == new:
                continue
            rows = out.setdefault(pid, [])
            if old is None:
                rows.append(bucket_row("INSERT", minute, new))  # type: ignore[arg-type]
            elif new is None:
                rows.append(bucket_row("DELETE", minute, old))
            else:
                rows.append(bucket_row("UPDATE_BEFORE", minute, old))
                rows.append(bucket_row("UPDATE_AFTER", minute, new))
        self._before.clear()
        for pid, rows in self._rows.items():
            out.setdefault(pid, []).extend(rows)
        self._rows = {}
        return out


class FullWork:
    """The job's work over dicts, without Kafka and Redis: dedup, identity, person buckets, the person
    operator (profile, tags, optionally rules and budgets) and its timers.

    Drive it per unique event with :meth:`identity` then :meth:`event`; per bundle with :meth:`run_bundles`;
    then :meth:`advance` the watermark; :meth:`finish` at the end of input. Outputs are
    ``operators.person.Output`` records; with rules, :meth:`decide` passes budgeted actions through the
    campaign budgets and counts actions per ``<rule>|<channel>`` and suppressions per reason.
    """

    def __init__(self, settings: Settings, *, rules: bool = False, coalesce: bool = True,
                 tagset: TagSet | None = None) -> None:
        self.graph = InMemoryGraph(IdentityRules.from_settings(settings.identity, settings.pii))
        #: identifier combination → its earliest (ts, event_id) seen (``zt_combos``)
        self.combos: dict[tuple[tuple[str, str], ...], tuple[int, str]] = {}
        self.seen: set[str] = set()
        self.minutes = PersonMinutes(coalesce=coalesce)
        self.tagset = tagset if tagset is not None else TagSet.load()
        if rules:
            from pipelines.actions import load_ruleset

            self.ruleset: Any = load_ruleset()
            self.routed: frozenset[str] = self.ruleset.event_types
        else:
            self.ruleset, self.routed = None, frozenset()
        self.persons: dict[str, PersonState] = {}
        self.stores: dict[str, DictRows] = {}
        self.timers: list[tuple[int, str]] = []
        self.delay = settings.job.watermark_delay_ms
        self.max_ts = 0
        #: minutes whose person bucket changed, per person, since the caller last cleared it
        self.touched: dict[str, set[int]] = {}
        self.budgets: dict[str, Any] = {}
        self.action_counts: dict[str, int] = {}

    # -- the JVM's part: dedup, combinations, buckets

    def unique(self, e: ValidEvent) -> bool:
        if e.event_id in self.seen:
            return False
        self.seen.add(e.event_id)
        return True

    def identity(self, e: ValidEvent) -> Mapping[str, str | None]:
        """Fold the event's identifier combination into the graph when it is new, or earlier than the
        one known (``zt_combos``); returns the identifier → person changes (apply them with :meth:`moves`)."""
        key = e.ids
        k = (e.ts, e.event_id)
        prev = self.combos.get(key)
        if prev is not None and prev <= k:
            return {}
        self.combos[key] = k
        return self.graph.observe(Observation(e.ids, e.ts, e.event_id)).mappings

    def moves(self, mappings: Mapping[str, str | None]) -> None:
        for ident, pid in mappings.items():
            self.minutes.move(ident, pid)

    def event(self, e: ValidEvent, item: str | None = None) -> None:
        """The event's bucket (for the person its anchor has now) and, when a rule listens to its type,
        its event row."""
        pid = self.graph.mapping.get(e.person)
        self.minutes.add(e, pid)
        if pid is not None and e.event_type in self.routed:
            self.minutes.event(pid, e, item)
        if e.ts > self.max_ts:
            self.max_ts = e.ts

    # -- the person operator

    def _load(self, pid: str) -> PersonState:
        st = self.persons.get(pid)
        if st is None:
            st = self.persons[pid] = PersonState(pid, Profile.empty())
        return st

    def _save(self, pid: str, st: PersonState) -> None:
        nxt = st.next_timer
        if nxt != st.timer_ms:
            if nxt:
                heapq.heappush(self.timers, (nxt, pid))
            st.timer_ms = nxt
        if st.is_empty():
            self.persons.pop(pid, None)

    def _store(self, pid: str) -> DictRows:
        rows = self.stores.get(pid)
        if rows is None:
            rows = self.stores[pid] = DictRows()
        return rows

    def run_bundles(self) -> list[Output]:
        """Each person's pending rows through ``on_rows``, one bundle per person."""
        out: list[Output] = []
        touched = self.touched
        for pid, rows in self.minutes.drain().items():
            t = touched.get(pid)
            if t is None:
                t = touched[pid] = set()
            t.update(r[3] for r in rows if r[1] == "m")
            st = self._load(pid)
            out += on_rows(st, rows, self._store(pid), self.tagset, self.ruleset)
            self._save(pid, st)
        return out

    def _keep(self, pid: str, st: PersonState) -> None:
        """The person was read but not changed (a timer that was replaced)."""

    def _fire(self, pid: str, t: int, watermark: int) -> list[Output]:
        st = self._load(pid)
        if t != st.timer_ms:  # replaced by another time
            self._keep(pid, st)
            return []
        st.timer_ms = 0
        out = on_timer(st, t, watermark, self._store(pid), self.tagset, self.ruleset)
        self._save(pid, st)
        return out

    def advance(self, watermark: int | None = None) -> list[Output]:
        """Fire the timers at or before ``watermark`` (default: newest event time − the watermark delay),
        in time order."""
        wm = self.max_ts - self.delay if watermark is None else watermark
        out: list[Output] = []
        timers = self.timers
        while timers and timers[0][0] <= wm:
            t, pid = heapq.heappop(timers)
            out += self._fire(pid, t, wm)
        return out

    def finish(self) -> list[Output]:
        """End of input: the last bundles, then every timer (tags do not flip, the engine's work runs)."""
        return self.run_bundles() + self.advance(END_OF_INPUT)

    # -- the budget step (``pipelines.person``'s BudgetFunction) and the action counters

    def decide(self, outs: Iterable[Output]) -> None:
        from operators.rules.guards import budget_step

        counts = self.action_counts
        for o in outs:
            if o.kind == "action":
                k = f"{o.item.rule_id}|{o.item.channel}"  # type: ignore[union-attr]
            elif o.kind == "suppressed":
                k = f"suppressed:{o.item.reason}"  # type: ignore[union-attr]
            elif o.kind == "budget":
                a = o.item
                campaign = a.campaign or ""  # type: ignore[union-attr]
                self.budgets[campaign], granted, _ = budget_step(self.budgets.get(campaign), [a])
                k = f"{a.rule_id}|{a.channel}" if granted else "suppressed:budget_exhausted"  # type: ignore[union-attr]
            else:
                continue
            counts[k] = counts.get(k, 0) + 1


class _Writer:
    """One pipelined round trip per batch, absolute values in the job's Redis layout."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.ids: dict[str, str] = {}  # identifier → person as written
        self.with_purchase: set[str] = set()

    def profiles(self, pipe: Any, work: FullWork) -> None:
        store = self.store
        for pid, minutes in work.touched.items():
            key = store.profile_key(pid)
            st = work.persons.get(pid)
            if st is None or st.profile.is_empty():
                pipe.delete(key)
                self.with_purchase.discard(pid)
                continue
            p = st.profile
            life = p.life
            fields: dict[str, Any] = {"views": life[0], "carts": life[1], "purchases": life[2], "events": life[3],
                                      "gmv_cents": life[4], "first_seen": p.first, "last_seen": p.last}
            gone: list[str] = []
            if p.lastp:
                fields["last_purchase"] = p.lastp
                self.with_purchase.add(pid)
            elif pid in self.with_purchase:
                gone.append("last_purchase")
                self.with_purchase.discard(pid)
            buckets = work.minutes.buckets.get(pid, {})
            hours, days = set(), set()
            for m in minutes:
                b = buckets.get(m)
                if b is None:
                    gone.append(f"m:{m}")
                else:
                    fields[f"m:{m}"] = ",".join(map(str, b))
                hours.add(m // 60)
                days.add(m // 1440)
            # hour buckets: views, carts; day buckets: purchases, gmv cents (absent = zero, or out of every window)
            for units, agg, (f1, f2) in ((hours, p.hours, ("hv", "hc")), (days, p.days, ("dp", "dg"))):
                for u in units:
                    x = agg.get(u)
                    if x is None:
                        gone += [f"{f1}:{u}", f"{f2}:{u}"]
                    else:
                        fields[f"{f1}:{u}"], fields[f"{f2}:{u}"] = x
            pipe.hset(key, mapping=fields)
            if gone:
                pipe.hdel(key, *gone)
        work.touched.clear()

    def id_map(self, pipe: Any, changes: Mapping[str, str | None]) -> None:
        store, written = self.store, self.ids
        members = store.members_prefix
        for ident, pid in changes.items():
            old = written.get(ident)
            if old == pid:
                continue
            if old is not None:
                pipe.srem(members + old, ident)
            if pid is None:
                written.pop(ident, None)
                pipe.delete(store.id_key(ident))
            else:
                written[ident] = pid
                pipe.set(store.id_key(ident), pid)
                pipe.sadd(members + pid, ident)

    def tags(self, pipe: Any, outs: Iterable[Output]) -> None:
        prefix = self.store.prefix
        for o in outs:
            if o.kind == "tag":
                c = o.item
                op = pipe.sadd if c.op == "add" else pipe.srem  # type: ignore[union-attr]
                op(f"{prefix}:tag:{c.tag}", c.person)  # type: ignore[union-attr]
                op(f"{prefix}:tags:{c.person}", c.tag)  # type: ignore[union-attr]


def diff_id_map(actual: Mapping[str, str], expected: Mapping[str, str], limit: int = 10) -> tuple[int, list[str]]:
    """Identifier → person id as written (``RedisStore.id_mapping()``) against the oracle's batch resolution:
    (number of identifiers that differ, the first ``limit``)."""
    bad = sorted(k for k in set(actual) | set(expected) if actual.get(k) != expected.get(k))
    return len(bad), [f"id {k}: {actual.get(k)} != {expected.get(k)}" for k in bad[:limit]]


def consume(settings: Settings, batches: Iterable[list[tuple[bytes, int]]], store: Any, *,
            rules: bool = False) -> dict[str, Any]:
    """The consumer's loop over batches of ``(value, Kafka timestamp)``, writing through ``store`` (a
    ``connectors.redis_store.RedisStore``: its key names and ``client.pipeline()``), one pipeline per batch."""
    from zhongtai.devtools.generator.oracle import _Pseudonyms

    from .consumers import MinuteCounters
    from .fastdecode import fast_decode

    job, pseudo = settings.job, _Pseudonyms(settings.pii, settings.identity)
    writer = _Writer(store)
    work = FullWork(settings, rules=rules, coalesce=True)
    counters = MinuteCounters(store.prefix, settings.redis.minute_counter_ttl_s)
    stats: dict[str, int] = {"valid": 0, "unique": 0}
    routed = work.routed
    n = n_out = 0
    it = iter(batches)
    while True:
        batch = next(it, None)
        ids: dict[str, str | None] = {}
        if batch is not None:
            for value, ts in batch:
                e = fast_decode(value, ts, job, pseudo)
                if type(e) is str:
                    k = "dlq:" + e
                    stats[k] = stats.get(k, 0) + 1
                    continue
                stats["valid"] += 1
                if not work.unique(e):  # type: ignore[arg-type]
                    continue
                stats["unique"] += 1
                counters.add(e)
                changed = work.identity(e)  # type: ignore[arg-type]
                if changed:
                    work.moves(changed)
                    ids.update(changed)
                work.event(e, item_id(value) if e.event_type in routed else None)  # type: ignore[union-attr,arg-type]
            n += len(batch)
            outs = work.run_bundles() + work.advance()
        else:
            outs = work.finish()
        n_out += len(outs)
        work.decide(outs)
        pipe = store.client.pipeline(transaction=False)
        counters.write(pipe)
        pipe.hset(store.stats_key, mapping=stats)
        writer.profiles(pipe, work)
        writer.id_map(pipe, ids)
        writer.tags(pipe, outs)
        if work.action_counts:
            pipe.hset(f"{store.prefix}:actions", mapping=work.action_counts)
        pipe.execute()
        if batch is None:
            break
    return {"records": n, "complete": True, "persons": len(work.persons), "outputs": n_out,
            "new_combinations": len(work.combos)}


def run_tuned_full(settings: Settings, topics: list[str], group: str, prefix: str, rules: bool = False,
                   **_: Any) -> dict[str, Any]:
    """The bench contender: :func:`consume` over the bench topics (read from the start to the end
    offsets seen at start), writing to Redis under ``prefix``."""
    from connectors.redis_store import RedisStore

    from .consumers import _Reader

    store = RedisStore(settings.redis, prefix=prefix)
    rd = _Reader(settings, topics, group)
    try:
        batches = ([(m.value() or b"", m.timestamp()[1]) for m in msgs] for msgs in rd.batches())
        return consume(settings, batches, store, rules=rules)
    finally:
        rd.close()
        store.close()
