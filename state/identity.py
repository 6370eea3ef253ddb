"""Keyed state of the identity graph: one blob per raw component (``operators.identity.model.Component``).

Declaration (one function per descriptor; pyflink imported lazily)
  * ``IDENTITY_COMPONENTS``: MapState ``identity-components-v1``, cid → :func:`encode_component` bytes stored
    as a latin-1 string (a bijection of the bytes: byte-array state values fail to snapshot in thread mode).
  * ``IDENTITY_INDEX``: MapState ``identity-index-v1``, identifier (``type:value``) → cid.
  * ``IDENTITY_OVERLAY``: ValueState ``identity-overlay-v1``, the dynamic overlay set by control messages:
    JSON ``{"blocked": [...], "isolated": [...]}``.
  * TTL: none. An identity must outlive any inactivity window (a customer returning after a year is
    the same person); size is bounded by *distinct identifier combinations*, not events, because a
    component keeps each combination once (at its earliest canonical key).

Codec: one version byte, then compact orjson. Identifiers are interned in a table so each is
written once per blob.

  * v2 (current): ``[cid, idents, combos, persons, detached]`` with combos ``[ts, event_id,
    [id#...], [[a#, b#, reason]...]]``, persons ``[pid, first_ts, first_event, founder#,
    [member#...]]`` and detached ``[id#...]`` (``#``: position in ``idents``).
  * v1 (old, still decoded): ``[cid, [[ts, event_id, [identifier...]]...]]`` — combinations only;
    persons and edge decisions are re-derived on decode with the rules given.
"""

from __future__ import annotations

from typing import Any

import orjson

from operators.identity.engine import new_component
from operators.identity.model import Combo, Component, Person
from operators.identity.rules import IdentityRules

IDENTITY_COMPONENTS = "identity-components-v1"
IDENTITY_INDEX = "identity-index-v1"
IDENTITY_OVERLAY = "identity-overlay-v1"
VERSION = 2


def component_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import MapStateDescriptor

    return MapStateDescriptor(IDENTITY_COMPONENTS, Types.STRING(), Types.STRING())


def index_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import MapStateDescriptor

    return MapStateDescriptor(IDENTITY_INDEX, Types.STRING(), Types.STRING())


def overlay_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return ValueStateDescriptor(IDENTITY_OVERLAY, Types.STRING())


class CodecError(ValueError):
    """A state blob that is not a known version of the component codec."""


def encode_component(c: Component) -> bytes:
    table: dict[str, int] = {}

    def ref(i: str) -> int:
        n = table.get(i)
        if n is None:
            n = table[i] = len(table)
        return n

    combos = [
        [cb.ts_ms, cb.event_id, [ref(i) for i in cb.ids], [[ref(a), ref(b), r] for a, b, r in cb.edges]]
        for cb in c.combos
    ]
    persons = [
        [p.pid, p.first_ts, p.first_event, ref(p.founder), [ref(m) for m in p.members]] for p in c.persons
    ]
    detached = sorted(ref(i) for i in c.detached)
    return bytes([VERSION]) + orjson.dumps([c.cid, list(table), combos, persons, detached])


def decode_component(blob: bytes, rules: IdentityRules) -> Component:
    """The component in ``blob``; ``rules`` are only used to re-derive persons of a v1 blob."""
    if not blob:
        raise CodecError("identity component blob is empty (state/identity.py): the state is corrupt")
    version, body = blob[0], blob[1:]
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise CodecError(f"identity component blob v{version} is not valid JSON: {e}") from None
    if version == 2:
        cid, idents, combos, persons, detached = data
        return Component(
            cid,
            tuple(
                Combo(
                    ts,
                    eid,
                    tuple(idents[i] for i in ids),
                    tuple((idents[a], idents[b], r) for a, b, r in edges),
                )
                for ts, eid, ids, edges in combos
            ),
            tuple(
                Person(pid, ts, eid, idents[f], tuple(idents[m] for m in members))
                for pid, ts, eid, f, members in persons
            ),
            frozenset(idents[i] for i in detached),
        )
    if version == 1:
        cid, combos = data
        return new_component(cid, (Combo(ts, eid, tuple(ids)) for ts, eid, ids in combos), rules)
    raise CodecError(
        f"identity component blob has version {version}; this build reads 1 and 2 (state/identity.py): "
        "restore with a build that knows it"
    )


def encode_component_v1(c: Component) -> bytes:
    """The old v1 form (combinations only): kept so tests can produce v1 blobs from any component."""
    return bytes([1]) + orjson.dumps([c.cid, [[cb.ts_ms, cb.event_id, list(cb.ids)] for cb in c.combos]])
