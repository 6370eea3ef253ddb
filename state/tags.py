"""Keyed and broadcast state of the tag shell (``pipelines.tags``): declarations and codecs.

Declaration
  * ``PERSON``: ValueState ``tags-person-v1`` per person (key = person id): :func:`encode_person` bytes
    stored as a latin-1 string (a bijection of the bytes; byte-array state values fail to snapshot in
    thread mode). It holds the person's :class:`operators.tags.BucketProfile` (the minute buckets of
    the last ``profile_windows.KEEP_DAYS`` days of the person's activity, older ones folded into one
    base row), the tags the person carries with the tag set version that computed them, the event
    time of the last evaluation and the event-time timer that is registered.
  * ``TAGSET``: broadcast MapState ``tags-tagset-v1``, the single key ``"tagset"`` →
    :func:`encode_tagset` of the running ``TagSet`` (after the control messages applied so far).
  * TTL: none, on purpose. A person's tags must outlive inactivity ("no purchase for 30 days" is
    the point), and Flink's state TTL runs on processing time, which would drop a lapsed customer's
    tags during a replay. The value is bounded per person by the kept window (at most
    ``KEEP_DAYS`` × 1440 minute rows, in practice the person's active minutes); it is cleared when
    the person has no bucket left (all moved away by merges) and carries no paused tag.

Codec: one version byte, then compact orjson.
  * person v1: ``[now_ms, timer_ms, tagset_version, [tag...], base, [[minute, *bucket]...]]``.
  * tagset v1: ``TagSet.to_snapshot()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from operators.tags import BucketProfile, TagSet, TagState

PERSON = "tags-person-v1"
TAGSET = "tags-tagset-v1"
TAGSET_KEY = "tagset"
PERSON_VERSION = 1
TAGSET_VERSION = 1


class CodecError(ValueError):
    """A state value that is not a known version of the tag codecs."""


@dataclass(frozen=True)
class PersonState:
    """Everything kept for one person. ``timer_ms`` 0 = no timer; ``now_ms`` never decreases."""

    profile: BucketProfile | None
    tags: TagState | None
    now_ms: int
    timer_ms: int = 0


def encode_person(s: PersonState) -> str:
    p = s.profile
    rows = [[m, *r] for m, r in sorted(p.rows.items())] if p is not None else []
    base = list(p.base) if p is not None else None
    tags = s.tags
    body = [s.now_ms, s.timer_ms, tags.tagset_version if tags else 0, sorted(tags.tags) if tags else [], base, rows]
    return (bytes([PERSON_VERSION]) + orjson.dumps(body)).decode("latin-1")


def decode_person(value: str) -> PersonState:
    blob = value.encode("latin-1")
    if not blob:
        raise CodecError("tag person state is empty (state/tags.py): the state is corrupt")
    version = blob[0]
    if version != PERSON_VERSION:
        raise CodecError(f"tag person state has version {version}; this build reads {PERSON_VERSION} (state/tags.py): "
                         "restore with a build that knows it")
    now_ms, timer_ms, tv, tags, base, rows = orjson.loads(blob[1:])
    profile = BucketProfile({r[0]: tuple(r[1:]) for r in rows}, tuple(base)) if base is not None else None
    return PersonState(profile, TagState(frozenset(tags), tv) if tags else None, now_ms, timer_ms)


def encode_tagset(ts: TagSet) -> str:
    return (bytes([TAGSET_VERSION]) + orjson.dumps(ts.to_snapshot())).decode("latin-1")


def decode_tagset(value: str) -> TagSet:
    blob = value.encode("latin-1")
    if not blob or blob[0] != TAGSET_VERSION:
        raise CodecError(f"tag set state has version {blob[:1]!r}; this build reads {TAGSET_VERSION} (state/tags.py)")
    return TagSet.from_snapshot(orjson.loads(blob[1:]))


def person_state() -> Any:
    """ValueState descriptor of ``PERSON`` (pyflink imported lazily: ``state`` loads without the JVM)."""
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return ValueStateDescriptor(PERSON, Types.STRING())


def tagset_state() -> Any:
    """Broadcast MapState descriptor of ``TAGSET``."""
    from pyflink.common import Types
    from pyflink.datastream.state import MapStateDescriptor

    return MapStateDescriptor(TAGSET, Types.STRING(), Types.STRING())
