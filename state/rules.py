"""Keyed and broadcast state of the strategy engine in the event job (``pipelines.rules``).

Declarations (one function per descriptor; pyflink is imported lazily so this module loads without it):

* ``rules-person-v1`` ValueState STRING, keyed by person: the engine's ``PersonState`` (consent, recent
  sends, held actions, pattern buffers, journey positions), :func:`encode_person`. Bounded by the
  engine itself (docs/rules.md, "state codec"); cleared when ``evaluate`` returns no state. No TTL:
  consent must not expire silently and a journey position must survive inactivity.
* ``rules-profile-v1`` ValueState STRING, keyed by person: :class:`MinuteProfile`, the person's minute
  buckets of the last ``KEEP_DAYS`` UTC days (as of the newest bucket) plus one folded base row for
  older buckets, :func:`encode_profile`. Bounded by 90 × 1,440 rows + 1 (the Redis profile keeps the
  same minutes). No TTL: lifetime totals live in the base row.
* ``rules-tags-v1`` ValueState STRING, keyed by person: the person's current tags, :func:`encode_tags`.
  Bounded by the tag set; cleared when the last tag is removed.
* ``rules-budget-v1`` ValueState BIGINT, keyed by campaign: actions granted so far (``budget_step``'s
  ``BudgetState.spent``). One number per campaign; never expires (a budget is a lifetime total).
* ``rules-control-log-v1`` broadcast MapState STRING → STRING: every control message that changed
  the rule set, under its sequence number (``%010d``), as JSON. The operator rebuilds the running
  ``RuleSet`` after a restore by replaying it over the rule set the job was started with. Bounded by
  the number of accepted changes (a few per day in practice; republishing a file is one batch).

Codecs: a string whose first character is the codec version (chr(1)), then compact JSON. A string
rather than bytes because byte-array state values fail to snapshot in thread mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from operators import profile_windows
from operators.rules.engine import PersonState, state_from_json, state_to_json

PERSON = "rules-person-v1"
PROFILE = "rules-profile-v1"
TAGS = "rules-tags-v1"
BUDGET = "rules-budget-v1"
CONTROL_LOG = "rules-control-log-v1"

CODEC_VERSION = 1
_V = chr(CODEC_VERSION)
KEEP_DAYS = profile_windows.KEEP_DAYS

#: A minute row: views, carts, purchases, events, gmv_cents, first_ts, last_ts, last_purchase (0 = none).
Row8 = tuple[int, int, int, int, int, int, int, int]
_ZERO: Row8 = (0, 0, 0, 0, 0, 0, 0, 0)


class StateCodecError(ValueError):
    """A state value written by an unknown codec version."""


def _body(what: str, s: str) -> Any:
    if not s or s[0] != _V:
        raise StateCodecError(f"rules state {what!r} has codec version {ord(s[0]) if s else None}; this build "
                              f"reads {CODEC_VERSION} (state/rules.py): restore with a build that knows it")
    return orjson.loads(s[1:])


# ------------------------------------------------------------------------------------------ descriptors


def person_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return ValueStateDescriptor(PERSON, Types.STRING())


def profile_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return ValueStateDescriptor(PROFILE, Types.STRING())


def tags_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return ValueStateDescriptor(TAGS, Types.STRING())


def budget_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return ValueStateDescriptor(BUDGET, Types.LONG())


def control_log_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import MapStateDescriptor

    return MapStateDescriptor(CONTROL_LOG, Types.STRING(), Types.STRING())


# ------------------------------------------------------------------------------------------------ codecs


def encode_person(st: PersonState) -> str:
    return _V + orjson.dumps(state_to_json(st)).decode()


def decode_person(s: str) -> PersonState:
    return state_from_json(_body(PERSON, s))


def encode_tags(tags: frozenset[str]) -> str:
    return _V + orjson.dumps(sorted(tags)).decode()


def decode_tags(s: str | None) -> frozenset[str]:
    return frozenset(_body(TAGS, s)) if s else frozenset()


@dataclass(frozen=True)
class MinuteProfile:
    """A person's profile input: minute rows (absolute values, as ``zt_person_minutes`` emits them) of
    the ``KEEP_DAYS`` UTC days ending with the newest row's day, and ``base``: every older row folded
    (sums; min first_ts, max last_ts / last_purchase). Rows older than the window that change later
    (an identity merge moving a 100-day-old bucket) are ignored, as the Redis profile ignores them."""

    rows: Mapping[int, Row8] = field(default_factory=dict)
    base: Row8 = _ZERO


def profile_put(p: MinuteProfile | None, minute: int, row: Row8 | None) -> MinuteProfile | None:
    """Set (``row``) or remove (None, or a row of zero events) minute ``minute``; None when empty."""
    rows = dict(p.rows) if p is not None else {}
    base = p.base if p is not None else _ZERO
    if row is not None and row[3] <= 0:
        row = None
    newest = max([base[6], *(r[6] for r in rows.values()), row[6] if row is not None else 0])
    floor_day = newest // profile_windows.DAY_MS - KEEP_DAYS + 1
    if minute not in rows and minute // 1440 < floor_day:
        return p  # behind the window: folded already (or never kept)
    if row is None:
        rows.pop(minute, None)
    else:
        rows[minute] = row
    for m in [m for m in rows if m // 1440 < floor_day]:
        r = rows.pop(m)
        firsts = [x for x in (base[5], r[5]) if x]
        base = (base[0] + r[0], base[1] + r[1], base[2] + r[2], base[3] + r[3], base[4] + r[4],
                min(firsts, default=0), max(base[6], r[6]), max(base[7], r[7]))
    if not rows and base[3] <= 0:
        return None
    return MinuteProfile(rows, base)


def profile_hash(p: MinuteProfile | None) -> dict[str, str]:
    """The Redis-shaped profile hash of ``p`` (connectors/redis_profile.lua): ``m:``, ``hv:``, ``hc:``,
    ``dp:``, ``dg:`` buckets and the lifetime fields, for :func:`operators.profile_windows.evaluate`.

    The buckets are derived exactly as the HBase reader derives them (``derive_profile_hash``); the folded
    base row is then added to the lifetime fields."""
    from connectors.hbase_store import derive_profile_hash

    if p is None:
        return {}
    h = derive_profile_hash({f"m:{m}": ",".join(map(str, r)) for m, r in p.rows.items()})
    b = p.base
    if b[3] > 0:
        for i, k in enumerate(("views", "carts", "purchases", "events", "gmv_cents")):
            h[k] = str(int(h[k]) + b[i])
        firsts = [x for x in (int(h["first_seen"]), b[5]) if x]
        h["first_seen"] = str(min(firsts, default=0))
        h["last_seen"] = str(max(int(h["last_seen"]), b[6]))
        lastp = max(int(h.get("last_purchase", 0)), b[7])
        if lastp:
            h["last_purchase"] = str(lastp)
    return h


def encode_profile(p: MinuteProfile) -> str:
    return _V + orjson.dumps([list(p.base), [[m, *r] for m, r in sorted(p.rows.items())]]).decode()


def decode_profile(s: str | None) -> MinuteProfile | None:
    if not s:
        return None
    base, rows = _body(PROFILE, s)
    return MinuteProfile({r[0]: tuple(r[1:]) for r in rows}, tuple(base))  # type: ignore[misc]
