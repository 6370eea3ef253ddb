"""The vocabulary of the synthetic clickstream: its configuration, its records and its fault classes.

A :class:`Record` is one Kafka record as the generator emits it; ``kind`` is the generator's own
label (``"ok"``, ``"dup"`` or a DLQ reason of docs/semantics.md). The oracle (``oracle.py``) never
reads ``kind``: it derives the same label from the bytes, and the tests check that both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: 2026-11-20T00:00:00Z in epoch milliseconds.
DEFAULT_START_MS = 1_795_132_800_000

#: DLQ reasons of docs/semantics.md the generator makes, in the order the checks run (first failing check
#: wins). Not generated (so the default stream stayed byte for byte the same): ``too_long:ids`` and
#: ``out_of_range:amount`` (issue 12), pinned by hand-made cases in tests/unit/test_oracle.py and the decode tests.
DLQ_REASONS: tuple[str, ...] = (
    "oversized",
    "not_utf8",
    "malformed_json",
    "missing_field:event_id",
    "wrong_type:event_id",
    "missing_field:event_type",
    "wrong_type:event_type",
    "missing_field:ts",
    "wrong_type:ts",
    "missing_field:ids",
    "wrong_type:ids",
    "no_identifier",
    "wrong_type:props.price",
    "wrong_type:props.qty",
    "future_ts",
    "late",
)

#: Duplicate classes. Both are emitted with ``kind == "dup"``: the same ``event_id`` as an earlier
#: valid event, in the same topic and partition, a few seconds to minutes later.
#: ``dup_exact`` re-sends the identical bytes; ``dup_conflict`` carries different content.
DUP_CLASSES: tuple[str, ...] = ("dup_exact", "dup_conflict")

FAULT_CLASSES: tuple[str, ...] = DLQ_REASONS + DUP_CLASSES

#: Record kinds: ``ok`` (valid, first of its event_id), ``dup`` and every DLQ reason.
KINDS: tuple[str, ...] = ("ok", "dup", *DLQ_REASONS)

SOURCES: tuple[str, ...] = ("web", "app", "store", "crm", "cs")

#: Topic suffix per ``source``: at most three topics, offline sources share one.
TOPIC_SUFFIX_BY_SOURCE: Mapping[str, str] = {
    "web": "web",
    "app": "app",
    "store": "offline",
    "crm": "offline",
    "cs": "offline",
}

EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "add_to_cart",
    "purchase",
    "register",
    "login",
    "exposure",
    "coupon_redeem",
)


#: The default identity-noise level (``GeneratorConfig(**IDENTITY_NOISE)``): the level the identity
#: quality test and bench measure (F1 ≥ 0.99 against the generator's real persons).
IDENTITY_NOISE: Mapping[str, float] = {
    "shared_device_share": 0.02,
    "kiosks": 3,
    "kiosk_share": 0.02,
    "junk_id_share": 0.01,
    "late_share": 0.01,
}


def fault_rates(total: float = 0.02, **overrides: float) -> dict[str, float]:
    """Per-class rates (share of all records) summing to ``total``, then ``overrides`` applied.

    The default split gives each of the 16 DLQ reasons 4/80 of ``total`` and the duplicates the
    remaining 16/80 (exact 12/80, conflicting 4/80): at ``total=0.02`` that is 0.1 % per reason,
    0.3 % exact and 0.1 % conflicting duplicates. Keys of ``overrides`` use ``_`` for ``:`` and
    ``.`` (``wrong_type_props_price=0.01``) or may be given through :meth:`GeneratorConfig`'s
    ``faults`` mapping with the exact class names.
    """
    rates = {r: total * 4 / 80 for r in DLQ_REASONS}
    rates["dup_exact"] = total * 12 / 80
    rates["dup_conflict"] = total * 4 / 80
    by_alias = {c.replace(":", "_").replace(".", "_"): c for c in FAULT_CLASSES}
    for k, v in overrides.items():
        if k not in by_alias:
            raise ValueError(f"unknown fault class {k!r}; known: {sorted(by_alias)}")
        rates[by_alias[k]] = v
    return rates


class GeneratorConfig(BaseModel):
    """Everything that determines the stream. Same config (and same ``JobSettings`` limits) → same bytes.

    Counts are exact: the stream holds exactly ``events`` records, of which
    ``round(rate × events)`` belong to each fault class and ``round(edge_rate × events)`` are valid
    boundary cases (see ``stream.py``); the rest are plain valid events.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 42
    #: Number of people behind the stream.
    persons: int = Field(2_000, ge=1)
    #: Total number of Kafka records (valid, duplicate and bad together).
    events: int = Field(100_000, ge=1)
    #: Start of the event-time span (epoch ms). Valid events fall in [start, start+span), except the
    #: boundary case ``ts_equals_skew`` (up to ``max_future_skew_ms`` later).
    start_ms: int = DEFAULT_START_MS
    span_ms: int = Field(6 * 3_600_000, ge=60_000)
    campaigns: int = Field(12, ge=1)
    #: ``props.channel`` values a campaign can run on.
    channels: tuple[str, ...] = ("web", "app", "store", "crm", "sms", "email")
    #: Catalogue size.
    items: int = Field(500, ge=1)
    #: Partitions per topic the records are spread over (by a hash of the key).
    partitions: int = Field(2, ge=1)
    #: Topics are ``<topic_prefix>web``, ``<topic_prefix>app`` and ``<topic_prefix>offline``.
    topic_prefix: str = "zt.events."

    #: Share of persons with an account (``user_id``); their sessions are logged in 70 % of the time.
    logged_in_share: float = Field(0.6, ge=0, le=1)
    phone_share: float = Field(0.5, ge=0, le=1)
    email_share: float = Field(0.4, ge=0, le=1)
    openid_share: float = Field(0.3, ge=0, le=1)
    #: Share of the persons with an ``openid`` that also have a ``unionid``.
    unionid_share: float = Field(0.6, ge=0, le=1)
    #: Share of valid events whose ``ts`` is an ISO-8601 string rather than int ms.
    iso_ts_share: float = Field(0.1, ge=0, le=1)

    #: Fault class → share of all records (see :func:`fault_rates`); classes left out get 0.
    faults: dict[str, float] = Field(default_factory=fault_rates)
    #: Share of records that are valid but sit on a boundary of the contract (exactly
    #: ``max_event_bytes`` long, lateness exactly the allowed one, 128-char event_id, ...).
    edge_rate: float = Field(0.002, ge=0, le=0.5)
    #: Share of DLQ records that also break a *later* check (so that check order is exercised).
    compound_share: float = Field(0.25, ge=0, le=1)

    # --- identity noise (docs/identity.md; all off by default, so existing streams stay the same) ----
    #: Share of persons whose first device is a household device also used by 1–4 other persons
    #: (a family tablet: same device_id and cookie). The ground truth gives it to its owner.
    shared_device_share: float = Field(0.0, ge=0, le=1)
    #: Number of store kiosk devices, and the share of web sessions run on one of them (any person).
    #: A kiosk belongs to no real person (its own pseudo-person in the ground truth).
    kiosks: int = Field(0, ge=0)
    kiosk_share: float = Field(0.0, ge=0, le=1)
    #: Share of valid events that carry a junk identifier value (``"0"``, ``"null"``, ``"undefined"``,
    #: the nil UUID, ...) in place of one of their identifiers or in addition.
    junk_id_share: float = Field(0.0, ge=0, le=1)
    #: Share of events delivered late: 10 min to ``allowed_lateness / 2`` after their event time
    #: (still valid; they arrive long after later events of the same person).
    late_share: float = Field(0.0, ge=0, le=1)

    @field_validator("faults")
    @classmethod
    def _known_faults(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(FAULT_CLASSES)
        if unknown:
            raise ValueError(f"unknown fault classes {sorted(unknown)}; known: {list(FAULT_CLASSES)}")
        if any(r < 0 or r > 1 for r in v.values()):
            raise ValueError("fault rates must be within [0, 1]")
        return {c: float(v.get(c, 0.0)) for c in FAULT_CLASSES}

    @model_validator(mode="after")
    def _room_for_faults(self) -> GeneratorConfig:
        share = sum(self.faults.values()) + self.edge_rate
        if share > 0.5:
            raise ValueError(f"fault rates plus edge_rate add up to {share:.3f}; keep them ≤ 0.5")
        if not self.channels:
            raise ValueError("channels must not be empty")
        if self.kiosk_share > 0 and self.kiosks == 0:
            raise ValueError("kiosk_share > 0 needs kiosks ≥ 1")
        return self

    @property
    def identity_noise(self) -> bool:
        """True when any identity-noise option is on (they draw from their own seeded generator)."""
        return bool(self.shared_device_share or self.kiosk_share or self.junk_id_share or self.late_share)

    def fault_counts(self) -> dict[str, int]:
        """Exact number of records per fault class."""
        return {c: round(r * self.events) for c, r in self.faults.items()}

    def topic_for(self, source: str) -> str:
        return self.topic_prefix + TOPIC_SUFFIX_BY_SOURCE[source]

    def topics(self) -> list[str]:
        return [self.topic_prefix + s for s in dict.fromkeys(TOPIC_SUFFIX_BY_SOURCE.values())]

    def default_name(self) -> str:
        """A file-name-safe name for this stream (``gen-s42-n100000``)."""
        return f"gen-s{self.seed}-n{self.events}"


class Record(NamedTuple):
    """One Kafka record. ``partition`` is chosen by the generator (crc32 of the key mod partitions),
    so the order of the records of one (topic, partition) in the stream is their offset order."""

    topic: str
    partition: int
    key: bytes
    value: bytes
    timestamp_ms: int
    #: ``"ok"``, ``"dup"`` or the DLQ reason the record must get.
    kind: str
