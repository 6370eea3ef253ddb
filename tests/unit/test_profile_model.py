"""The one profile model (``operators.profile.Profile``) against a from-scratch reference.

The reference keeps every minute bucket and folds like the stream: a change to a bucket older than the
kept days (as of the newer of last_seen and the bucket's own last_ts) that is not kept is ignored; after
each change, buckets older than the kept days are folded (sums stay, extremes into a base). Fields are
then computed from scratch (``profile_windows.evaluate`` over the Redis-shaped hash, which the Redis Lua
script is tested against elsewhere). Thousands of random updates, deletes (merges moving buckets away,
which retract extremes), late and very old changes, and windows as of other times.
"""

from __future__ import annotations

import random

import pytest

from operators import profile_windows
from operators.profile import ASOF_MARGIN_MS, DAY_MS, KEEP_DAYS, DictRows, Profile

T0 = 1_704_067_200_000


class Reference:
    def __init__(self) -> None:
        self.rows: dict[int, tuple] = {}
        self.base = [0, 0, 0, 0, 0, 0, 0, 0]

    def last(self) -> int:
        return max([self.base[6], *(r[6] for r in self.rows.values())])

    def apply(self, minute: int, new: tuple | None) -> None:
        if new is not None and new[3] <= 0:
            new = None
        if minute not in self.rows:
            ref = max(self.last(), new[6] if new else 0)
            if new is None or minute // 1440 < ref // DAY_MS - KEEP_DAYS + 1:
                return
        if new is None:
            self.rows.pop(minute, None)
        else:
            self.rows[minute] = new
        if not self.rows and self.base[3] <= 0:
            return
        floor = self.last() // DAY_MS - KEEP_DAYS + 1
        for m in [m for m in self.rows if m // 1440 < floor]:
            r = self.rows.pop(m)
            b = self.base
            firsts = [x for x in (b[5], r[5]) if x]
            self.base = [b[0] + r[0], b[1] + r[1], b[2] + r[2], b[3] + r[3], b[4] + r[4], min(firsts) if firsts else 0,
                         max(b[6], r[6]), max(b[7], r[7])]

    def fields(self, as_of: int | None = None) -> dict:
        if not self.rows and self.base[3] <= 0:
            return {}
        h = {"views": 0, "carts": 0, "purchases": 0, "events": 0, "gmv_cents": 0}
        b = self.base
        first, last, lastp = b[5], b[6], b[7]
        for i, k in enumerate(h):
            h[k] = b[i]
        agg: dict[str, int] = {}
        for m, r in self.rows.items():
            for i, k in enumerate(("views", "carts", "purchases", "events", "gmv_cents")):
                h[k] += r[i]
            first = r[5] if not first else (min(first, r[5]) if r[5] else first)
            last, lastp = max(last, r[6]), max(lastp, r[7])
            agg[f"m:{m}"] = ",".join(map(str, r))
            for k, x in ((f"hv:{m // 60}", r[0]), (f"hc:{m // 60}", r[1]), (f"dp:{m // 1440}", r[2]),
                         (f"dg:{m // 1440}", r[4])):
                agg[k] = agg.get(k, 0) + x
        hsh = {k: str(v) for k, v in {**h, **agg}.items()}
        hsh.update(first_seen=str(first), last_seen=str(last))
        if lastp:
            hsh["last_purchase"] = str(lastp)
        return profile_windows.evaluate(hsh, as_of)


def _random_run(seed: int, steps: int) -> None:
    rnd = random.Random(seed)
    ref, p, rows = Reference(), Profile.empty(), DictRows()
    ts = T0
    for i in range(steps):
        ts += rnd.choice([0, 1000, 30_000, 600_000, 3 * 3_600_000, 2 * DAY_MS])
        if rnd.random() < 0.03:
            ts += 100 * DAY_MS  # a long pause: folding
        kept = list(ref.rows)
        r = rnd.random()
        if r < 0.12 and kept:  # a merge moved a bucket away
            m = rnd.choice(kept)
            old = ref.rows[m]
            ref.apply(m, None)
            p.apply(rows, m, old, None)
        elif r < 0.2 and kept:  # a bucket shrank (a split): extremes may retract
            m = rnd.choice(kept)
            old = ref.rows[m]
            new = (max(0, old[0] - 1), old[1], max(0, old[2] - 1), max(1, old[3] - 1), old[4] // 2,
                   old[5] + (1 if old[6] > old[5] else 0), old[6] - (1 if old[6] > old[5] + 1 else 0),
                   0 if rnd.random() < 0.5 else old[7])
            ref.apply(m, new)
            p.apply(rows, m, old, new)
        else:
            late = rnd.random() < 0.1
            t = ts - (rnd.randint(0, 200) * DAY_MS if rnd.random() < 0.3 else rnd.randint(0, 7200_000)) if late else ts
            m = t // 60_000
            old = ref.rows.get(m)
            new = (rnd.randint(0, 3) + (old[0] if old else 0), rnd.randint(0, 2), rnd.randint(0, 1),
                   1 + (old[3] if old else 0), rnd.randint(0, 9999), min(t, old[5]) if old else t,
                   max(t, old[6]) if old else t, t if rnd.random() < 0.3 else (old[7] if old else 0))
            ref.apply(m, new)
            p.apply(rows, m, old, new)
        assert dict(rows) == ref.rows, f"step {i}"
        want = ref.fields()
        assert p.fields() == want, f"step {i}"
        if want and rnd.random() < 0.2:
            as_of = want["last_seen"] + rnd.choice([-ASOF_MARGIN_MS, -60_000, 0, 59_000, 3_600_000, 40 * DAY_MS,
                                                     -3 * DAY_MS])
            assert p.fields(as_of, rows) == ref.fields(as_of), f"step {i} as of {as_of - want['last_seen']}"
        if rnd.random() < 0.05:  # a restore: the codec round trip changes nothing
            p = Profile.from_json(p.to_json())


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_incremental_profile_equals_the_reference(seed: int) -> None:
    _random_run(seed, 2500)


def test_retraction_of_the_extremes_and_the_empty_profile() -> None:
    p, rows = Profile.empty(), DictRows()
    a = (1, 0, 1, 1, 500, T0, T0, T0)
    b = (0, 1, 0, 1, 0, T0 + 60_000, T0 + 60_000, 0)
    p.apply(rows, T0 // 60_000, None, a)
    p.apply(rows, T0 // 60_000 + 1, None, b)
    assert (p.fields()["first_seen"], p.fields()["last_seen"], p.fields()["last_purchase"]) == (T0, T0 + 60_000, T0)
    p.apply(rows, T0 // 60_000, a, None)  # the bucket with the first event and the purchase moved away
    f = p.fields()
    assert (f["first_seen"], f["last_seen"], "last_purchase" in f, f["gmv"], f["events"]) == (
        T0 + 60_000, T0 + 60_000, False, "0.00", 1)
    p.apply(rows, T0 // 60_000 + 1, b, None)
    assert p.fields() == {} and p.is_empty() and dict(rows) == {}


def test_cost_does_not_grow_with_history() -> None:
    """The derived part stays bounded by the windows, whatever the number of buckets."""
    p, rows = Profile.empty(), DictRows()
    for i in range(20_000):  # one event every 10 minutes for ~139 days
        t = T0 + i * 600_000
        p.apply(rows, t // 60_000, None, (1, 0, 0, 1, 0, t, t, 0))
    assert len(p.mins) <= 12 + 1 and len(p.hours) <= 168 + 2 and len(p.days) <= 91
    assert len(rows) <= KEEP_DAYS * 144 and len(str(p.to_json())) < 6000
