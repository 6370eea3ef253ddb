"""Broadcast state of the tags (in the person operator, ``pipelines.person``): declaration and codec.

Declaration
  * ``TAGSET``: broadcast MapState ``tags-tagset-v1``, the single key ``"tagset"`` →
    :func:`encode_tagset` of the running ``TagSet`` (after the control messages applied so far).
    Bounded by the tag set; no TTL (the definitions live as long as the job). A person's tags are
    part of the person state (``state.person``).

Codec: one version byte, then compact orjson of ``TagSet.to_snapshot()``, stored as a latin-1 string
(a bijection of the bytes; byte-array state values fail to snapshot in thread mode).
"""

from __future__ import annotations

from typing import Any

import orjson

from operators.tags import TagSet

TAGSET = "tags-tagset-v1"
TAGSET_KEY = "tagset"
TAGSET_VERSION = 1


class CodecError(ValueError):
    """A state value that is not a known version of the tag set codec."""


def encode_tagset(ts: TagSet) -> str:
    return (bytes([TAGSET_VERSION]) + orjson.dumps(ts.to_snapshot())).decode("latin-1")


def decode_tagset(value: str) -> TagSet:
    blob = value.encode("latin-1")
    if not blob or blob[0] != TAGSET_VERSION:
        raise CodecError(f"tag set state has version {blob[:1]!r}; this build reads {TAGSET_VERSION} (state/tags.py)")
    return TagSet.from_snapshot(orjson.loads(blob[1:]))


def tagset_state() -> Any:
    """Broadcast MapState descriptor of ``TAGSET``."""
    from pyflink.common import Types
    from pyflink.datastream.state import MapStateDescriptor

    return MapStateDescriptor(TAGSET, Types.STRING(), Types.STRING())
