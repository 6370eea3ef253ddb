"""Keyed state of the recommender (``pipelines.recs``) and its Redis values: declarations and codecs.

Declarations (pyflink imported lazily):

* ``recs-person-v1`` ValueState STRING, key = person: ``operators.recs.cooccurrence.PersonWindow`` (the last
  ``recs.window_items`` weighted events and up to ``recs.max_purchased`` purchases). Dropped by the step's
  event-time timer ``recs.person_ttl_ms`` after the person's last event.
* ``recs-norm-v1`` ValueState STRING, key = item: ``ItemNorm`` (the item's decayed squared norm). Dropped
  ``recs.pair_ttl_ms`` after its last update (event-time timer).
* ``recs-neighbours-v1`` ValueState STRING, key = item: ``Neighbours`` (at most ``max_neighbours`` × 1.25
  pairs; pairs untouched for ``recs.pair_ttl_ms`` dropped by the timer, the key cleared when none is left).

No Flink TTL on any of them: the steps forget by event time, which a replay reproduces (processing-time
TTL would not). Codec: one version character (chr(1)), then compact JSON.

Redis values (written by the store through rows ``ri`` / ``rp``, ``connectors.redis_store``):
``{prefix}:rec:item:{item}`` sorted set neighbour → score (the whole list replaced at once), and
``{prefix}:rec:person:{person}`` the person's window as :func:`encode_window_row`.
"""

from __future__ import annotations

from typing import Any

import orjson

from operators.recs.cooccurrence import ItemNorm, Neighbours, PersonWindow, Seen

PERSON = "recs-person-v1"
NORM = "recs-norm-v1"
NEIGHBOURS = "recs-neighbours-v1"
_V = "\x01"


class RecsCodecError(ValueError):
    """A state or Redis value of an unknown codec version."""


def _body(name: str, raw: str) -> Any:
    if raw[0] != _V:
        raise RecsCodecError(f"state {name}: unknown codec version {ord(raw[0])}; this job reads version 1 "
                             "(restore from a checkpoint of a compatible job, or start it fresh)")
    return orjson.loads(raw[1:])


def encode_window(w: PersonWindow) -> str:
    return _V + orjson.dumps([[[s.item, s.ts_ms, s.weight] for s in w.recent], [list(p) for p in w.purchased]]).decode()


def decode_window(raw: str | None) -> PersonWindow | None:
    if not raw:
        return None
    recent, purchased = _body(PERSON, raw)
    return PersonWindow(tuple(Seen(i, t, w) for i, t, w in recent), tuple((i, t) for i, t in purchased))


def encode_norm(n: ItemNorm) -> str:
    return _V + orjson.dumps([n.norm, n.ts_ms]).decode()


def decode_norm(raw: str | None) -> ItemNorm | None:
    if not raw:
        return None
    norm, ts = _body(NORM, raw)
    return ItemNorm(norm, ts)


def encode_neighbours(n: Neighbours) -> str:
    return _V + orjson.dumps([n.norm, n.norm_ts, n.last_ts, n.pairs]).decode()


def decode_neighbours(raw: str | None) -> Neighbours | None:
    if not raw:
        return None
    norm, norm_ts, last_ts, pairs = _body(NEIGHBOURS, raw)
    return Neighbours(norm, norm_ts, last_ts, {b: list(e) for b, e in pairs.items()})


# ---- Redis values ----------------------------------------------------------------------------------
def encode_window_row(w: PersonWindow | None) -> str:
    """``{prefix}:rec:person:{person}``: ``{"recent": [[item, ts, weight]...], "purchased": [[item, ts]...]}``
    (``""`` for no window: the key is deleted)."""
    if w is None:
        return ""
    return orjson.dumps({"recent": [[s.item, s.ts_ms, s.weight] for s in w.recent],
                         "purchased": [list(p) for p in w.purchased]}).decode()


def decode_window_row(raw: str | None) -> PersonWindow | None:
    if not raw:
        return None
    d = orjson.loads(raw)
    return PersonWindow(tuple(Seen(i, t, w) for i, t, w in d["recent"]), tuple((i, t) for i, t in d["purchased"]))


def encode_neighbours_row(top: tuple[tuple[str, float], ...]) -> str:
    """``{prefix}:rec:item:{item}``'s whole list as JSON ``[[item, score]...]`` (``[]``: delete the key)."""
    return orjson.dumps([list(t) for t in top]).decode()


def decode_neighbours_row(raw: str | None) -> list[tuple[str, float]]:
    return [(i, float(s)) for i, s in orjson.loads(raw or "[]")]


def descriptors() -> dict[str, Any]:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return {name: ValueStateDescriptor(name, Types.STRING()) for name in (PERSON, NORM, NEIGHBOURS)}
