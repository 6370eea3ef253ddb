"""Keyed state of the person operator (``pipelines.person``): declarations and codecs.

Declarations (pyflink imported lazily, so this module loads without the JVM):

* ``PERSON`` ValueState ``person-v1`` STRING, key = person id: :func:`encode_person` of
  ``operators.person.PersonState`` without its minute buckets — the incremental profile (lifetime sums,
  extremes, the bounded minute / hour / day aggregates of the windows), the tags with the tag set
  version that computed them, the tags' evaluation time and next flip, the strategy engine's state
  (consent, recent sends, held actions, pattern and journey state; ``operators.rules.engine``), its
  pending times and the registered timer. Written once per bundle (not per row). Bounded: the profile
  part by the windows, the engine's by its own limits (docs/rules.md). Cleared when the person has no
  bucket, no tag, no engine state and no pending time left.
* ``MINUTES`` MapState ``person-minutes-v1`` BIGINT → STRING, key = person id: the person's minute
  buckets of the kept days (``operators.profile.KEEP_DAYS``), ``"views,carts,purchases,events,gmv_cents,
  first,last,last_purchase"``. One put or remove per changed minute per bundle; read only on the
  profile's rare paths (a retracted extreme, folding once per day, windows far back).
* TTL: none, on purpose (as before for tags and rules): tags are about inactivity and consent must not
  expire; Flink's TTL runs on processing time and a replay would drop them. Bounded as said above.

Codec of ``PERSON``: one version character (chr(1)), then compact JSON
``[now_ms, tag_due, timer_ms, tagset_version, [tag...], profile, rules | null, [rule_time...], pending_old]``,
then ``traits`` (``operators.traits.TraitBuckets.to_json``) only when the person has computed-trait state: a
value without it (every value written before traits existed, and every person of a job without traits) reads
as no trait state, so adding the first trait needs no new codec version.
A string, not bytes: byte-array state values fail to snapshot in thread mode.

Before this operator (zhongtai 0.1) tags and rules were two operators (``tags-person-v1``,
``rules-person-v1``, ``rules-profile-v1``, ``rules-tags-v1``); their state does not map into this one. The
migration is a replay: start the new version without state on the retained topics (docs/upgrade.md).
"""

from __future__ import annotations

from typing import Any

import orjson

from operators.person import PersonState
from operators.profile import Bucket, Profile
from operators.rules.engine import state_from_json, state_to_json
from operators.tags import TagState
from operators.traits import TraitBuckets

PERSON = "person-v1"
MINUTES = "person-minutes-v1"
CODEC_VERSION = 1
_V = chr(CODEC_VERSION)


class CodecError(ValueError):
    """A state value written by an unknown codec version (or not at all)."""


def encode_person(st: PersonState) -> str:
    tags = st.tags
    body = [st.now_ms, st.tag_due, st.timer_ms, tags.tagset_version if tags else 0,
            sorted(tags.tags) if tags else [], st.profile.to_json(),
            state_to_json(st.rules) if st.rules is not None else None, st.rule_timers,
            [[m, *b] for m, b in st.pending_old.items()]]
    if st.traits is not None and not st.traits.is_empty():
        body.append(st.traits.to_json())
    return _V + orjson.dumps(body).decode()


def decode_person(person: str, value: str) -> PersonState:
    if not value or value[0] != _V:
        raise CodecError(f"person state {PERSON!r} of {person!r} has codec version "
                         f"{ord(value[0]) if value else None}; this build reads {CODEC_VERSION} (state/person.py): "
                         "restore with a build that knows it, or start without state and replay (docs/upgrade.md)")
    body = orjson.loads(value[1:])
    now_ms, tag_due, timer_ms, tv, tags, profile, rules, rule_timers, pending = body[:9]
    return PersonState(person, Profile.from_json(profile), TagState(frozenset(tags), tv) if tags else None, now_ms,
                       tag_due, state_from_json(rules) if rules is not None else None, list(rule_timers), timer_ms,
                       None, {r[0]: tuple(r[1:]) for r in pending},
                       TraitBuckets.from_json(body[9]) if len(body) > 9 else None)


def encode_bucket(b: Bucket) -> str:
    return ",".join(map(str, b))


def decode_bucket(s: str) -> Bucket:
    return tuple(int(x) for x in s.split(","))  # type: ignore[return-value]


def person_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return ValueStateDescriptor(PERSON, Types.STRING())


def minutes_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import MapStateDescriptor

    return MapStateDescriptor(MINUTES, Types.LONG(), Types.STRING())
