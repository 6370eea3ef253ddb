"""The person profile, incrementally: the one model of the rolling profile (pure).

A person's profile is a set of absolute minute buckets ``(views, carts, purchases, events, gmv_cents,
first_ts, last_ts, last_purchase)`` — what the person-minute aggregate emits (``zt_person_minutes``) —
and the fields derived from them (docs/semantics.md "Person profile"):

* lifetime: ``first_seen``, ``last_seen``, ``last_purchase`` (absent if none), ``events``, ``views``,
  ``carts``, ``purchases``, ``gmv``;
* rolling, aligned to buckets, as of a time ``t`` (``last_seen`` unless asked otherwise): ``views_1h``
  (60 minute buckets ending with t's minute), ``views_24h`` / ``views_7d`` / ``carts_7d`` (24 / 168 hour
  buckets ending with t's hour), ``purchases_30d`` / ``gmv_30d`` / ``purchases_90d`` / ``gmv_90d`` (30 / 90 UTC
  day buckets ending with t's day). Money is a 2-decimal string.

:class:`Profile` keeps them so that one bucket change costs O(1), whatever the person's history: the
lifetime sums, the extremes, and sparse minute / hour / day aggregates bounded by the windows (plus a
margin so that a time up to ``ASOF_MARGIN_MS`` before ``last_seen`` is answered from them too). The
minute buckets themselves live in a :class:`RowStore` (Flink MapState in the job, a dict in tests); they
are read only on the rare paths: a change that retracts the extreme ``first_seen``/``last_seen``/
``last_purchase`` (an identity merge or split moved a bucket away), dropping buckets that left the
kept days (``KEEP_DAYS``, once per day of event time), and windows as of a time further back.

Changes to a bucket outside the kept days (as of the newer of ``last_seen`` and the bucket's own
``last_ts``) are ignored, as the Redis profile ignores them (connectors/redis_profile.lua is this model's
mirror on the Redis side; tests compare the two).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
KEEP_DAYS = 90
#: A window "as of" a time this much before last_seen is still answered from the aggregates.
ASOF_MARGIN_MS = HOUR_MS
_MIN_KEEP = 60 + ASOF_MARGIN_MS // MINUTE_MS  # minutes of views kept
_HOUR_KEEP = 168 + ASOF_MARGIN_MS // HOUR_MS + 1  # hours of views / carts kept
_DAY_KEEP = 90 + 1  # days of purchases / gmv kept

#: One minute bucket: views, carts, purchases, events, gmv_cents, first_ts, last_ts, last_purchase (0 = none).
Bucket = tuple[int, int, int, int, int, int, int, int]

FIELDS = ("first_seen", "last_seen", "last_purchase", "events", "views", "carts", "purchases", "gmv",
          "views_1h", "views_24h", "views_7d", "carts_7d", "purchases_30d", "gmv_30d", "purchases_90d", "gmv_90d")
MONEY_FIELDS = frozenset({"gmv", "gmv_30d", "gmv_90d"})
#: The fields each bucket column feeds (a change of only these columns leaves the others as they were).
WINDOW_FIELDS = frozenset({"views_1h", "views_24h", "views_7d", "carts_7d", "purchases_30d", "gmv_30d",
                           "purchases_90d", "gmv_90d"})


def cents_to_str(cents: int) -> str:
    return str((Decimal(cents) / 100).quantize(Decimal("0.01")))


class RowStore(Protocol):
    """Where the minute buckets live (MapState minute → bucket in the job)."""

    def get(self, minute: int) -> Bucket | None: ...
    def put(self, minute: int, bucket: Bucket) -> None: ...
    def remove(self, minute: int) -> None: ...
    def items(self) -> Iterable[tuple[int, Bucket]]: ...


class DictRows(dict):  # type: ignore[type-arg]
    """A :class:`RowStore` over a dict (tests, the logic probe, the hand-written contender)."""

    def put(self, minute: int, bucket: Bucket) -> None:
        self[minute] = bucket

    def remove(self, minute: int) -> None:
        self.pop(minute, None)


@dataclass(slots=True)
class Profile:
    """The derived, bounded part of a person's profile (see the module docstring). Mutable: one instance
    per person in the operator's memory; :meth:`to_json`/:meth:`from_json` are its state codec body.

    ``life``: lifetime [views, carts, purchases, events, gmv_cents]; ``first``/``last``/``lastp``: the
    extremes (0 = none); ``base``: the extremes of the folded rows [first, last, last_purchase]; ``mins``:
    minute → views; ``hours``: hour → [views, carts]; ``days``: day → [purchases, gmv_cents]; ``oldest``:
    the oldest minute in the row store (None = empty).
    """

    life: list[int]
    first: int
    last: int
    lastp: int
    base: list[int]
    mins: dict[int, int]
    hours: dict[int, list[int]]
    days: dict[int, list[int]]
    oldest: int | None
    #: bumped by every change that was applied (a memo key for derived values; not persisted)
    version: int = 0

    @classmethod
    def empty(cls) -> Profile:
        return cls([0, 0, 0, 0, 0], 0, 0, 0, [0, 0, 0], {}, {}, {}, None)

    def is_empty(self) -> bool:
        return self.life[3] <= 0

    # ---------------------------------------------------------------------------------------- changes

    def apply(self, rows: RowStore, minute: int, old: Bucket | None, new: Bucket | None) -> bool:
        """Set (``new``) or delete (``None``) the bucket ``minute``; ``old`` is its current value (None when
        the row store has none: an INSERT). True when the change was applied, False when ignored.

        A bucket of zero events counts as deleted. The caller passes ``old`` from the changelog (the
        aggregate's UPDATE_BEFORE / DELETE row) so that the row store is not read on this path.
        """
        if new is not None and new[3] <= 0:
            new = None
        if old is not None and old[3] <= 0:
            old = None
        if old is None and new is None:
            return False
        ref = max(self.last, new[6] if new is not None else 0)
        if minute // 1440 < ref // DAY_MS - KEEP_DAYS + 1 and (self.oldest is None or minute < self.oldest
                                                                or rows.get(minute) is None):
            return False  # outside the kept days (folded, or never kept): as the Redis profile does
        if new is None:
            rows.remove(minute)
        else:
            rows.put(minute, new)
            if self.oldest is None or minute < self.oldest:
                self.oldest = minute
        o = old or (0, 0, 0, 0, 0, 0, 0, 0)
        n = new or (0, 0, 0, 0, 0, 0, 0, 0)
        life = self.life
        dv, dc, dp, de, dg = n[0] - o[0], n[1] - o[1], n[2] - o[2], n[3] - o[3], n[4] - o[4]
        life[0] += dv
        life[1] += dc
        life[2] += dp
        life[3] += de
        life[4] += dg
        if dv:
            self.mins[minute] = self.mins.get(minute, 0) + dv
        if dv or dc:
            h = self.hours.setdefault(minute // 60, [0, 0])
            h[0] += dv
            h[1] += dc
        if dp or dg:
            d = self.days.setdefault(minute // 1440, [0, 0])
            d[0] += dp
            d[1] += dg
        self.version += 1
        if life[3] <= 0:
            self.first = self.last = self.lastp = 0
            self.base = [0, 0, 0]
            self.mins.clear()
            self.hours.clear()
            self.days.clear()
            self.oldest = None
            return True
        if old is not None and ((o[5] and o[5] == self.first and (not n[5] or n[5] > o[5]))
                                or (o[6] == self.last and n[6] < o[6]) or (o[7] and o[7] == self.lastp and n[7] < o[7])):
            self._rebuild(rows)  # the bucket that held an extreme shrank or left: the rare path
        else:
            if n[5] and (not self.first or n[5] < self.first):
                self.first = n[5]
            if n[6] > self.last:
                self._advance(rows, n[6])
            if n[7] > self.lastp:
                self.lastp = n[7]
        return True

    def _advance(self, rows: RowStore, last: int) -> None:
        """``last_seen`` moves forward to ``last``: drop aggregates no window can reach, fold old rows."""
        prev = self.last
        prev_day = prev // DAY_MS
        self.last = last
        m, h, d = last // MINUTE_MS, last // HOUR_MS, last // DAY_MS
        # pruning can only be due when the minute (hour) moved: most events stay in their minute
        if m != prev // MINUTE_MS and self.mins and min(self.mins) <= m - _MIN_KEEP:
            self.mins = {k: v for k, v in self.mins.items() if k > m - _MIN_KEEP}
        if h != prev // HOUR_MS and self.hours and min(self.hours) <= h - _HOUR_KEEP:
            self.hours = {k: v for k, v in self.hours.items() if k > h - _HOUR_KEEP}
        if d != prev_day:
            if self.days and min(self.days) <= d - _DAY_KEEP:
                self.days = {k: v for k, v in self.days.items() if k > d - _DAY_KEEP}
            floor = (d - KEEP_DAYS + 1) * 1440
            if self.oldest is not None and self.oldest < floor:
                self._fold(rows, floor)

    def _fold(self, rows: RowStore, floor_minute: int) -> None:
        """Drop the rows before ``floor_minute`` from the store: their sums stay in the lifetime totals, their
        extremes in ``base``."""
        keep_oldest = None
        b = self.base
        for m, r in list(rows.items()):
            if m < floor_minute:
                rows.remove(m)
                if r[5] and (not b[0] or r[5] < b[0]):
                    b[0] = r[5]
                b[1] = max(b[1], r[6])
                b[2] = max(b[2], r[7])
            elif keep_oldest is None or m < keep_oldest:
                keep_oldest = m
        self.oldest = keep_oldest

    def _rebuild(self, rows: RowStore) -> None:
        """Extremes and window aggregates again from the rows and the folded base (the lifetime sums are
        exact already). The rare path: a change retracted an extreme."""
        b = self.base
        first, last, lastp = b
        oldest = None
        mins: dict[int, int] = {}
        hours: dict[int, list[int]] = {}
        days: dict[int, list[int]] = {}
        kept = list(rows.items())
        for m, r in kept:
            if r[5] and (not first or r[5] < first):
                first = r[5]
            last = max(last, r[6])
            lastp = max(lastp, r[7])
            if oldest is None or m < oldest:
                oldest = m
        mt, ht, dt = last // MINUTE_MS, last // HOUR_MS, last // DAY_MS
        for m, r in kept:
            if r[0] and m > mt - _MIN_KEEP:
                mins[m] = mins.get(m, 0) + r[0]
            if (r[0] or r[1]) and m // 60 > ht - _HOUR_KEEP:
                h = hours.setdefault(m // 60, [0, 0])
                h[0] += r[0]
                h[1] += r[1]
            if (r[2] or r[4]) and m // 1440 > dt - _DAY_KEEP:
                d = days.setdefault(m // 1440, [0, 0])
                d[0] += r[2]
                d[1] += r[4]
        self.first, self.last, self.lastp, self.oldest = first, last, lastp, oldest
        self.mins, self.hours, self.days = mins, hours, days

    # ----------------------------------------------------------------------------------------- fields

    def fields(self, as_of: int | None = None, rows: RowStore | None = None, *, complete: bool = False) -> dict[str, Any]:
        """The profile fields (``FIELDS``; ``last_purchase`` only when there is one), windows as of ``as_of``
        (default ``last_seen``). ``as_of`` more than ``ASOF_MARGIN_MS`` before last_seen needs ``rows``, unless
        the aggregates are ``complete`` (not pruned: a profile read from a stored hash, :func:`from_hash`)."""
        if self.life[3] <= 0 and not self.last:
            return {}
        t = self.last if as_of is None else as_of
        if t < self.last - ASOF_MARGIN_MS and not complete:
            if rows is None:
                raise ValueError("Profile.fields: a time that far before last_seen needs the row store")
            return _fields_from_rows(self, rows, t)
        life = self.life
        mt, ht, dt = t // MINUTE_MS, t // HOUR_MS, t // DAY_MS
        v1h = 0
        for m, v in self.mins.items():
            if mt - 60 < m <= mt:
                v1h += v
        v24 = v7 = c7 = 0
        for h, (v, c) in self.hours.items():
            if ht - 168 < h <= ht:
                v7 += v
                c7 += c
                if h > ht - 24:
                    v24 += v
        p30 = g30 = p90 = g90 = 0
        # folded days count in no window (a stored hash keeps its own days: ``complete``)
        kept = dt - 90 if complete else max(dt - 90, self.last // DAY_MS - KEEP_DAYS)
        for d, (p, g) in self.days.items():
            if kept < d <= dt:
                p90 += p
                g90 += g
                if d > dt - 30:
                    p30 += p
                    g30 += g
        out: dict[str, Any] = {
            "first_seen": self.first, "last_seen": self.last, "events": life[3], "views": life[0], "carts": life[1],
            "purchases": life[2], "gmv": cents_to_str(life[4]), "views_1h": v1h, "views_24h": v24, "views_7d": v7,
            "carts_7d": c7, "purchases_30d": p30, "gmv_30d": cents_to_str(g30), "purchases_90d": p90,
            "gmv_90d": cents_to_str(g90),
        }
        if self.lastp:
            out["last_purchase"] = self.lastp
        return out

    # ------------------------------------------------------------------------------------------ codec

    def to_json(self) -> list[Any]:
        return [self.life, self.first, self.last, self.lastp, self.base, [[k, v] for k, v in self.mins.items()],
                [[k, *v] for k, v in self.hours.items()], [[k, *v] for k, v in self.days.items()], self.oldest]

    @classmethod
    def from_json(cls, d: list[Any]) -> Profile:
        life, first, last, lastp, base, mins, hours, days, oldest = d
        return cls(list(life), first, last, lastp, list(base), {k: v for k, v in mins},
                   {r[0]: [r[1], r[2]] for r in hours}, {r[0]: [r[1], r[2]] for r in days}, oldest)

    @classmethod
    def from_rows(cls, rows: RowStore) -> Profile:
        """The profile of the buckets in ``rows`` (as of their newest ``last_ts``); folds as the stream does."""
        p = cls.empty()
        scratch = DictRows()
        for m, b in sorted(rows.items()):
            p.apply(scratch, m, None, b)
        for m in [m for m in rows_keys(rows) if scratch.get(m) is None]:
            rows.remove(m)
        return p


def _int(h: Any, k: str) -> int:
    v = h.get(k)
    return int(v) if v not in (None, "") else 0


def from_hash(h: Any) -> tuple[Profile, DictRows]:
    """The profile stored as a hash (Redis ``{prefix}:profile:{person}``, kept by connectors/redis_profile.lua,
    or HBase's minute cells through ``connectors.hbase_store.derive_profile_hash``): lifetime fields,
    ``m:<minute>`` rows, ``hv:``/``hc:`` hour and ``dp:``/``dg:`` day buckets. Returns the profile (its
    aggregates complete, not pruned: ask ``fields(..., complete=True)``) and its minute rows."""
    rows = DictRows()
    mins: dict[int, int] = {}
    hours: dict[int, list[int]] = {}
    days: dict[int, list[int]] = {}
    for k, v in h.items():
        if k.startswith("m:"):
            b = tuple(int(x) for x in v.split(","))
            rows[int(k[2:])] = b  # type: ignore[assignment]
            if b[0]:
                mins[int(k[2:])] = b[0]
        elif k.startswith(("hv:", "hc:")):
            hours.setdefault(int(k[3:]), [0, 0])[0 if k[1] == "v" else 1] = int(v)
        elif k.startswith(("dp:", "dg:")):
            days.setdefault(int(k[3:]), [0, 0])[0 if k[1] == "p" else 1] = int(v)
    life = [_int(h, "views"), _int(h, "carts"), _int(h, "purchases"), _int(h, "events"), _int(h, "gmv_cents")]
    p = Profile(life, _int(h, "first_seen"), _int(h, "last_seen"), _int(h, "last_purchase"), [0, 0, 0], mins, hours,
                days, min(rows) if rows else None)
    return p, rows


def rows_keys(rows: RowStore) -> Iterator[int]:
    return (m for m, _ in list(rows.items()))


def _fields_from_rows(p: Profile, rows: RowStore, t: int) -> dict[str, Any]:
    """The rare path of :meth:`Profile.fields`: windows as of a time far before last_seen, from the rows."""
    mt, ht, dt = t // MINUTE_MS, t // HOUR_MS, t // DAY_MS
    v1h = v24 = v7 = c7 = p30 = g30 = p90 = g90 = 0
    for m, b in rows.items():
        h, d = m // 60, m // 1440
        if mt - 60 < m <= mt:
            v1h += b[0]
        if ht - 168 < h <= ht:
            v7 += b[0]
            c7 += b[1]
            if h > ht - 24:
                v24 += b[0]
        if dt - 90 < d <= dt:
            p90 += b[2]
            g90 += b[4]
            if d > dt - 30:
                p30 += b[2]
                g30 += b[4]
    life = p.life
    out: dict[str, Any] = {
        "first_seen": p.first, "last_seen": p.last, "events": life[3], "views": life[0], "carts": life[1],
        "purchases": life[2], "gmv": cents_to_str(life[4]), "views_1h": v1h, "views_24h": v24, "views_7d": v7,
        "carts_7d": c7, "purchases_30d": p30, "gmv_30d": cents_to_str(g30), "purchases_90d": p90,
        "gmv_90d": cents_to_str(g90),
    }
    if p.lastp:
        out["last_purchase"] = p.lastp
    return out
