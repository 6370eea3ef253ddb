"""Keyed state of the attribution operator (``pipelines.attribution``): declaration and codec.

* ``attribution-person-v1`` ValueState STRING, key = person: ``operators.rules.attribution.AttributionState``
  (the person's delivered actions inside the attribution window and the purchases waiting for late
  receipts), codec: chr(1) + compact JSON. Bounded by the window (``job.attribution_window_ms``: older
  deliveries are dropped by the step); cleared when the step returns no state. No TTL: the step itself
  forgets by event time, which a replay reproduces (processing-time TTL would not).
"""

from __future__ import annotations

from typing import Any

import orjson

from operators.rules.attribution import AttributionState, Delivery

STATE_NAME = "attribution-person-v1"
_VERSION = "\x01"


def encode_state(st: AttributionState) -> str:
    return _VERSION + orjson.dumps({
        "p": st.person_id, "d": [[d.action_id, d.ts_ms, d.channel, d.rule_id, d.campaign] for d in st.deliveries],
        "q": [list(p) for p in st.pending], "u": st.decided_until, "l": st.late_receipts}).decode()


def decode_state(raw: str | None) -> AttributionState | None:
    if not raw:
        return None
    if raw[0] != _VERSION:
        raise ValueError(f"state {STATE_NAME}: unknown codec version {ord(raw[0])}; this job reads version 1 "
                         "(restore from a checkpoint of a compatible job, or start it fresh)")
    j = orjson.loads(raw[1:])
    return AttributionState(j["p"], tuple(Delivery(*d) for d in j["d"]), tuple(tuple(p) for p in j["q"]),
                            j["u"], j["l"])


def person_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return ValueStateDescriptor(STATE_NAME, Types.STRING())
