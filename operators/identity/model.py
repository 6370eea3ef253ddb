"""The records of the identity graph: an observation, a component (its combinations and persons),
the change and edge-log records, what a step returns, and the stable person and component ids.
Semantics: ``graph``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

#: Edge reasons: accepted ones, then the rejections (``limit:<type>`` names the type over its limit,
#: ``shared:<type>`` the type both persons held when a shareable identifier would have joined them).
ACCEPTED_REASONS = frozenset({"merged", "same"})


def person_id(founder: str) -> str:
    """Stable person id of the person founded by identifier ``founder`` (``"type:value"``)."""
    return "p" + hashlib.sha256(founder.encode("utf-8")).hexdigest()[:16]


def detached_person_id(ident: str) -> str:
    """Person id of identifier ``ident`` once detached (a person of its own, never linked again)."""
    return "p" + hashlib.sha256(("detached:" + ident).encode("utf-8")).hexdigest()[:16]


def component_id(ident: str) -> str:
    return "c" + hashlib.sha256(ident.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Observation:
    """The identifiers one event carried: ``((type, value), ...)`` as stored (phone/e-mail hashed)."""

    ids: tuple[tuple[str, str], ...]
    ts_ms: int
    event_id: str


@dataclass(frozen=True, slots=True)
class Combo:
    """One distinct identifier combination of a component, at the earliest canonical key it was seen.

    ``ids`` are cleaned (static junk dropped) in canonical order; ``edges`` are the decisions its
    links got in the component's current resolution: ``(a, b, reason)``.
    """

    ts_ms: int
    event_id: str
    ids: tuple[str, ...]
    edges: tuple[tuple[str, str, str], ...] = ()

    @property
    def key(self) -> tuple[int, str, tuple[str, ...]]:
        return (self.ts_ms, self.event_id, self.ids)


@dataclass(frozen=True, slots=True)
class Person:
    """A resolved person: its id, when and by which identifier it was founded, its identifiers."""

    pid: str
    first_ts: int
    first_event: str
    founder: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class Component:
    """One raw connected component: its combinations in canonical order and the persons they resolve to.

    ``cid`` is stable while the component lives (a merge keeps the id of the component with the most
    identifiers). Derived lookups (``person_of``, ``combo_at``, ``idents``) are built on first use,
    once per object (or handed over by :func:`step`, which derives them from the previous version).
    Identifiers on the dynamic blocklist stay in ``idents`` (so ``unblock`` finds them) but belong to
    no person.
    """

    cid: str
    combos: tuple[Combo, ...]
    persons: tuple[Person, ...]
    #: Identifiers detached by a rejected link (each is alone in its person and never linked again).
    detached: frozenset[str] = frozenset()

    @cached_property
    def person_of(self) -> Mapping[str, str]:
        """identifier → person id (identifiers on the dynamic blocklist have none)."""
        return {m: p.pid for p in self.persons for m in p.members}

    @cached_property
    def combo_at(self) -> Mapping[tuple[str, ...], int]:
        """combination → its position in ``combos``."""
        return {c.ids: i for i, c in enumerate(self.combos)}

    @cached_property
    def idents(self) -> frozenset[str]:
        """Every identifier of the component."""
        return frozenset(i for c in self.combos for i in c.ids)

    @cached_property
    def person_by_id(self) -> Mapping[str, Person]:
        return {p.pid: p for p in self.persons}

    def _seed(
        self, person_of: dict[str, str], combo_at: dict[tuple[str, ...], int], idents: frozenset[str]
    ) -> None:
        """Hand over derived maps computed by :func:`step` (they must equal what the properties give)."""
        self.__dict__.update(person_of=person_of, combo_at=combo_at, idents=idents)

    @property
    def last_key(self) -> tuple[int, str, tuple[str, ...]]:
        return self.combos[-1].key


@dataclass(frozen=True, slots=True)
class Change:
    """A record for ``zt.identity.changes``.

    ``kind``: ``merge`` (``person`` absorbed ``other``; ``other`` no longer exists), ``split``
    (``identifiers`` left ``person``, which still exists, for ``other``), ``attach`` (identifiers new
    to any person joined ``person``), ``detach`` (identifiers left ``person`` and now have none).
    ``cause``: ``event:<event_id>``, ``late_event:<event_id>`` (an out-of-order re-resolution) or
    ``control:<op>:<cause given>``.
    """

    kind: str
    person: str
    other: str | None
    identifiers: tuple[str, ...]
    ts_ms: int
    cause: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "person": self.person,
            "other": self.other,
            "identifiers": list(self.identifiers),
            "ts_ms": self.ts_ms,
            "cause": self.cause,
        }


@dataclass(frozen=True, slots=True)
class Edge:
    """An edge-log record: the decision on linking ``a`` (the anchor) with ``b``.

    ``reason``: ``merged`` / ``same`` (accepted); ``limit:<type>`` or ``shared:<type>`` (rejected,
    ``b`` detached; see ``IdentityRules.refusal``),
    ``detached`` (``a`` or ``b`` was detached earlier) or ``isolated`` (split by control) — rejected.
    """

    a: str
    b: str
    accepted: bool
    reason: str
    ts_ms: int
    event_id: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "accepted": self.accepted,
            "reason": self.reason,
            "ts_ms": self.ts_ms,
            "event_id": self.event_id,
        }


@dataclass(frozen=True)
class StepResult:
    """What one :func:`step` / control call changed.

    ``upserts``: components to write (cid → component); ``deletes``: cids to drop (merged away);
    ``index``: identifier → cid for identifiers that are new or moved to another component;
    ``mappings``: identifier → person id, or None when it has no person any more (only changes);
    ``changes``, ``edges``: records for the changes topic and the edge log; ``path``: ``noop`` (no
    usable identifier), ``fast`` (known combination), ``append`` (new combination in canonical order:
    incremental), ``replay`` (out of order or control: the component re-resolved in canonical order).
    """

    upserts: Mapping[str, Component] = field(default_factory=dict)
    deletes: tuple[str, ...] = ()
    index: Mapping[str, str] = field(default_factory=dict)
    mappings: Mapping[str, str | None] = field(default_factory=dict)
    changes: tuple[Change, ...] = ()
    edges: tuple[Edge, ...] = ()
    path: str = "noop"


_NOOP = StepResult()
_FAST = StepResult(path="fast")
