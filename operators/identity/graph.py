"""The identity graph (ID-Mapping): which identifiers belong to one person. Pure; no pyflink.

Semantics (docs/identity.md is the long form)
  * An :class:`Observation` is the identifiers one event carried. Its *canonical key* is
    ``(ts_ms, event_id)``; ties (only possible for conflicting duplicates) by its identifiers.
  * The resolution of a set of observations is DEFINED as processing them in canonical order:
    each observation's identifiers, strongest first (``IdentityRules.priority``, then value), are
    linked to the first one (the *anchor*). Unknown identifiers found a person of their own. A link
    whose two persons differ merges them unless the merged person would hold more identifiers of some
    type than ``IdentityRules.limits`` allows, or when the link goes through an identifier of a
    shareable type (device, cookie) and both persons already hold an identifier of one same other
    type (``IdentityRules.refusal``): then the link is rejected (reason ``limit:<type>`` /
    ``shared:<type>``) and the weaker identifier of the link (``x``, never the anchor) is
    *detached*: it leaves its person for a person of its own (id ``"p" + sha256("detached:" + x)[:16]``)
    and every later link to it is rejected (``detached``) — a device seen with two user_ids (or two
    persons' phones) is evidently shared and glues nobody.
    The detach is retroactive: the person ``x`` leaves is re-split along the accepted links that
    remain. Identifiers on the dynamic blocklist are skipped; isolated identifiers (``split``) keep a
    person of their own and every link to them is rejected (``isolated``). A repeated combination is
    a no-op: each of its links is an accepted link already or touches a detached identifier.
  * An identifier's *founding key* is (ts, event_id of its first observation, type rank, itself); a
    person's founder is its member with the smallest one, its id ``"p" + sha256(founder)[:16]``. On
    a merge the survivor is the older person (smaller founder key), so replays give the same ids.

Streaming, component-centric: a :class:`Component` is one raw connected component (all links,
accepted or not) holding each distinct identifier combination once, with its earliest canonical key,
plus the persons it resolves to. :func:`step` folds one observation into the components holding its
identifiers and returns what changed (:class:`StepResult`). Because observations of different raw
components never touch the same persons, resolving each component in canonical order equals
resolving everything at once (``batch.resolve_batch``), for every arrival order.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .rules import IdentityRules, split_identifier

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


class _Engine:
    """Mutable resolution state: identifier → person, persons' members/age/counts, links, detached.

    Loading an already resolved component is lazy: a person is copied into the engine only when an
    observation touches one of its identifiers, and the link graph (``adj``, ``first``) is rebuilt
    from the stored combinations only when a detach needs it. So appending to a large component
    costs in the size of the persons involved, not of the component.
    """

    __slots__ = (
        "adj",
        "age",
        "counts",
        "detached",
        "dirty",
        "first",
        "limits",
        "members",
        "moved",
        "pending",
        "person_of",
        "rank",
        "rules",
        "src_combos",
        "src_person_of",
        "src_persons",
    )

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules
        self.rank = rules.rank
        self.limits = tuple(rules.limits[t] for t in rules.priority)
        self.person_of: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}
        self.age: dict[str, tuple[int, str, int, str]] = {}
        self.counts: dict[str, list[int]] = {}
        self.detached: set[str] = set()
        #: identifier → canonical key (ts, event_id) of the first combination it was in
        self.first: dict[str, tuple[int, str]] = {}
        #: accepted links (``merged``/``same``) between identifiers that are not detached; None until
        #: needed when loaded from components (links made meanwhile wait in ``pending``)
        self.adj: dict[str, set[str]] | None = {}
        self.pending: list[tuple[str, str]] = []
        self.src_combos: list[tuple[Combo, ...]] = []
        self.src_person_of: list[Mapping[str, str]] = []
        self.src_persons: list[Mapping[str, Person]] = []
        #: identifiers whose person was (re)assigned, persons created or changed: what to diff/rebuild
        self.moved: set[str] = set()
        self.dirty: set[str] = set()

    def load(self, component: Component) -> None:
        """Resolve on top of an already resolved component (lazily; see the class docstring)."""
        self.detached.update(component.detached)
        self.src_combos.append(component.combos)
        self.src_person_of.append(component.person_of)
        self.src_persons.append(component.person_by_id)
        self.adj = None

    def _pid(self, ident: str) -> str | None:
        pid = self.person_of.get(ident)
        if pid is not None:
            return pid
        for of, persons in zip(self.src_person_of, self.src_persons, strict=True):
            pid = of.get(ident)
            if pid is not None:
                self._take(persons[pid])
                return pid
        return None

    def _take(self, p: Person) -> None:
        """Copy stored person ``p`` into the engine."""
        rank = self.rank
        counts = [0] * len(self.limits)
        for m in p.members:
            self.person_of[m] = p.pid
            counts[rank[m.partition(":")[0]]] += 1
        self.members[p.pid] = list(p.members)
        self.age[p.pid] = (p.first_ts, p.first_event, rank[p.founder.partition(":")[0]], p.founder)
        self.counts[p.pid] = counts

    def _graph(self) -> dict[str, set[str]]:
        """The link graph, rebuilt from the stored combinations on first need."""
        if self.adj is not None:
            return self.adj
        adj: dict[str, set[str]] = {}
        first, gone = self.first, self.detached
        for combos in self.src_combos:
            for c in combos:
                for i in c.ids:
                    if i not in first:
                        first[i] = (c.ts_ms, c.event_id)
                for a, b, r in c.edges:
                    if r in ACCEPTED_REASONS and a not in gone and b not in gone:
                        adj.setdefault(a, set()).add(b)
                        adj.setdefault(b, set()).add(a)
        for a, b in self.pending:
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
        self.pending.clear()
        self.adj = adj
        # Every stored person is needed as it is once persons are re-split.
        for persons in self.src_persons:
            for p in persons.values():
                if p.pid not in self.members and p.members[0] not in self.person_of:
                    self._take(p)
        return adj

    def apply(self, ts: int, eid: str, ids: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
        """Process one combination (canonical order); return its link decisions ``(a, b, reason)``."""
        rules = self.rules
        if rules.blocked_identifiers:
            ids = tuple(i for i in ids if i not in rules.blocked_identifiers)
            if not ids:
                return ()
        for i in ids:
            if self._pid(i) is None:
                self._found(i, ts, eid)
        person_of = self.person_of
        isolated, detached = rules.isolated_identifiers, self.detached
        anchor = ids[0]
        if isolated or detached:
            anchor = next((i for i in ids if i not in isolated and i not in detached), ids[0])
        out = []
        for x in ids:
            if x == anchor:
                continue
            if isolated and (x in isolated or anchor in isolated):
                out.append((anchor, x, "isolated"))
                continue
            if detached and (x in detached or anchor in detached):
                out.append((anchor, x, "detached"))
                continue
            pa, px = person_of[anchor], person_of[x]
            if pa == px:
                out.append((anchor, x, "same"))
                self._link(anchor, x)
                continue
            why = rules.refusal(self.rank[x.partition(":")[0]], self.counts[pa], self.counts[px])
            if why is not None:
                out.append((anchor, x, why))
                self._detach(x, ts, eid)
            else:
                self._merge(pa, px)
                self._link(anchor, x)
                out.append((anchor, x, "merged"))
        return tuple(out)

    def _link(self, a: str, b: str) -> None:
        if self.adj is None:
            self.pending.append((a, b))
            return
        self.adj.setdefault(a, set()).add(b)
        self.adj.setdefault(b, set()).add(a)

    def _detach(self, x: str, ts: int, eid: str) -> None:
        """``x`` leaves its person for one of its own, retroactively: the person is re-split into the
        groups its remaining accepted links connect (whoever was only joined through ``x`` leaves)."""
        adj = self._graph()
        px = self.person_of[x]
        rest = set(self.members.pop(px))
        rest.discard(x)
        del self.counts[px], self.age[px]
        self.dirty.discard(px)
        for n in adj.pop(x, ()):
            adj[n].discard(x)
        self.detached.add(x)
        self._person(detached_person_id(x), [x], x)
        while rest:
            seed = rest.pop()
            part, todo = [seed], [seed]
            while todo:
                for n in adj.get(todo.pop(), ()):
                    if n in rest:
                        rest.discard(n)
                        part.append(n)
                        todo.append(n)
            founder = min(part, key=self._founding_key)
            self._person(person_id(founder), part, founder)

    def _founding_key(self, ident: str) -> tuple[int, str, int, str]:
        ts, eid = self.first[ident]
        return (ts, eid, self.rank[ident.partition(":")[0]], ident)

    def _person(self, pid: str, members: list[str], founder: str) -> None:
        counts = [0] * len(self.limits)
        rank, person_of = self.rank, self.person_of
        for m in members:
            person_of[m] = pid
            counts[rank[m.partition(":")[0]]] += 1
        self.members[pid] = members
        self.age[pid] = self._founding_key(founder)
        self.counts[pid] = counts
        self.moved.update(members)
        self.dirty.add(pid)

    def _found(self, ident: str, ts: int, eid: str) -> None:
        self.first[ident] = (ts, eid)
        pid = person_id(ident)
        r = self.rank[ident.partition(":")[0]]
        counts = [0] * len(self.limits)
        counts[r] = 1
        self.person_of[ident] = pid
        self.members[pid] = [ident]
        self.age[pid] = (ts, eid, r, ident)
        self.counts[pid] = counts
        self.moved.add(ident)
        self.dirty.add(pid)

    def _merge(self, pa: str, px: str) -> None:
        survivor, loser = (pa, px) if self.age[pa] <= self.age[px] else (px, pa)
        moved = self.members.pop(loser)
        person_of = self.person_of
        for m in moved:
            person_of[m] = survivor
        self.members[survivor].extend(moved)
        cs, cl = self.counts[survivor], self.counts.pop(loser)
        for r, n in enumerate(cl):
            cs[r] += n
        del self.age[loser]
        self.moved.update(moved)
        self.dirty.add(survivor)
        self.dirty.discard(loser)

    def persons(self) -> tuple[Person, ...]:
        """All persons, oldest first: stored ones untouched by this engine are reused as they are."""
        rank = self.rank
        out: list[Person] = []
        for pid, members in self.members.items():
            stored = None if pid in self.dirty else next((s[pid] for s in self.src_persons if pid in s), None)
            if stored is not None:
                out.append(stored)
                continue
            ts, eid, _, founder = self.age[pid]
            ordered = tuple(sorted(members, key=lambda m: (rank[m.partition(":")[0]], m)))
            out.append(Person(pid, ts, eid, founder, ordered))
        seen = self.members.keys()
        gone_members = self.person_of  # identifiers now held by an engine person
        for persons in self.src_persons:
            for p in persons.values():
                if p.pid not in seen and p.members[0] not in gone_members:
                    out.append(p)
        out.sort(key=lambda p: (p.first_ts, p.first_event, rank[p.founder.partition(":")[0]], p.founder))
        return tuple(out)


def _resolve(combos: Iterable[Combo], rules: IdentityRules) -> tuple[tuple[Combo, ...], _Engine]:
    """Resolve ``combos`` (any order) from scratch in canonical order; combos come back with edges."""
    eng = _Engine(rules)
    out = []
    for c in sorted(combos, key=lambda c: c.key):
        out.append(Combo(c.ts_ms, c.event_id, c.ids, eng.apply(c.ts_ms, c.event_id, c.ids)))
    return tuple(out), eng


def new_component(cid: str, combos: Iterable[Combo], rules: IdentityRules) -> Component:
    """A component resolved from scratch (used by the codec for old versions and by tests)."""
    resolved, eng = _resolve(combos, rules)
    return Component(cid, resolved, eng.persons(), frozenset(eng.detached))


def fast_path_hit(component: Component, ids: tuple[str, ...], ts_ms: int, event_id: str) -> bool:
    """True when combination ``ids`` (cleaned, canonical order) is already in ``component`` at a
    canonical key ≤ ``(ts_ms, event_id)``: processing it again cannot change anything.

    One dict lookup and a tuple comparison. A Flink operator can keep just ``ids → key`` per
    component (or a hash of ``ids``) to answer this without decoding the component.
    """
    pos = component.combo_at.get(ids)
    return pos is not None and (ts_ms, event_id) >= (
        component.combos[pos].ts_ms,
        component.combos[pos].event_id,
    )


def _edges(decisions: Iterable[tuple[str, str, str]], ts: int, eid: str) -> list[Edge]:
    return [Edge(a, b, r in ACCEPTED_REASONS, r, ts, eid) for a, b, r in decisions]


def _diff(
    old: Mapping[str, str | None],
    new: Mapping[str, str],
    idents: Iterable[str],
    alive: Iterable[str],
    ts_ms: int,
    cause: str,
) -> tuple[dict[str, str | None], tuple[Change, ...]]:
    """Mapping changes and change records between two assignments over ``idents``; ``alive`` are
    the person ids that exist afterwards (an old person still alive was split, else merged)."""
    mappings: dict[str, str | None] = {}
    groups: dict[tuple[str | None, str | None], list[str]] = {}
    for i in idents:
        o, n = old.get(i), new.get(i)
        if o != n:
            mappings[i] = n
            groups.setdefault((o, n), []).append(i)
    if not groups:
        return mappings, ()
    alive = set(alive)
    changes = []
    for (o, n), ids in groups.items():
        ids_t = tuple(sorted(ids))
        if o is None:
            changes.append(Change("attach", n, None, ids_t, ts_ms, cause))  # type: ignore[arg-type]
        elif n is None:
            changes.append(Change("detach", o, None, ids_t, ts_ms, cause))
        elif o in alive:
            changes.append(Change("split", o, n, ids_t, ts_ms, cause))
        else:
            changes.append(Change("merge", n, o, ids_t, ts_ms, cause))
    changes.sort(key=lambda c: (c.kind, c.person, c.other or "", c.identifiers))
    return mappings, tuple(changes)


def step(components: Mapping[str, Component], obs: Observation, rules: IdentityRules) -> StepResult:
    """Fold ``obs`` into the graph.

    ``components`` must hold every component containing one of ``obs``'s identifiers (look them up in
    the identifier → cid index that ``StepResult.index`` maintains); others may be present and are
    ignored. Returns what to write back; the components passed in are not modified.

    Paths: ``fast`` when the combination is known at an earlier-or-equal key (nothing changes);
    ``append`` when a new combination comes after everything the touched components hold (one
    incremental union step); ``replay`` otherwise (the merged component re-resolved in canonical
    order, only the differences emitted).
    """
    ids = rules.clean_ids(obs.ids)
    if not ids:
        return _NOOP
    touched = [c for c in components.values() if not c.idents.isdisjoint(ids)]
    ts, eid = obs.ts_ms, obs.event_id
    if len(touched) == 1 and fast_path_hit(touched[0], ids, ts, eid):
        return _FAST
    key = (ts, eid, ids)
    cause = f"event:{eid}"
    if touched:
        survivor = max(touched, key=lambda c: (len(c.idents), c.cid)).cid
        kept: frozenset[str] = next(c.idents for c in touched if c.cid == survivor)
    else:
        survivor = component_id(ids[0])
        kept = frozenset()
    in_order = all(c.last_key < key for c in touched)
    known = any(ids in c.combo_at for c in touched)
    if in_order and not known:
        eng = _Engine(rules)
        for c in touched:
            eng.load(c)
        decisions = eng.apply(ts, eid, ids)
        new = Combo(ts, eid, ids, decisions)
        if len(touched) == 1:
            (old,) = touched
            combos = (*old.combos, new)
            combo_at = dict(old.combo_at)
            combo_at[ids] = len(combos) - 1
            person_of = dict(old.person_of)
            idents = old.idents.union(ids)
        else:
            combos = (*heapq.merge(*(c.combos for c in touched), key=lambda c: c.key), new)
            combo_at = {c.ids: n for n, c in enumerate(combos)}
            person_of = {}
            for c in touched:
                person_of.update(c.person_of)
            idents = frozenset(ids).union(*(c.idents for c in touched))
        before = {m: person_of.get(m) for m in eng.moved}
        after = {m: eng.person_of[m] for m in eng.moved}
        person_of.update(after)
        comp = Component(survivor, combos, eng.persons(), frozenset(eng.detached))
        comp._seed(person_of, combo_at, idents)
        mappings, changes = _diff(before, after, eng.moved, comp.person_by_id.keys(), ts, cause)
        edges = _edges(decisions, ts, eid)
        path = "append"
    else:
        pool: dict[tuple[str, ...], Combo] = {}
        for c in touched:
            for cb in c.combos:
                pool[cb.ids] = cb
        prev = pool.get(ids)
        if prev is None or key < prev.key:
            pool[ids] = Combo(ts, eid, ids)
        resolved, eng = _resolve(pool.values(), rules)
        comp = Component(survivor, resolved, eng.persons(), frozenset(eng.detached))
        old_assign: dict[str, str] = {}
        for c in touched:
            old_assign.update(c.person_of)
        cause = f"late_event:{eid}"
        mappings, changes = _diff(
            old_assign, comp.person_of, comp.idents, comp.person_by_id.keys(), ts, cause
        )
        edges = _changed_edges(touched, comp, ids)
        path = "replay"
    index = {i: survivor for c in touched if c.cid != survivor for i in c.idents}
    index.update((i, survivor) for i in ids if i not in kept)
    return StepResult(
        upserts={survivor: comp},
        deletes=tuple(sorted(c.cid for c in touched if c.cid != survivor)),
        index=index,
        mappings=mappings,
        changes=changes,
        edges=tuple(edges),
        path=path,
    )


def _changed_edges(old: Iterable[Component], new: Component, ids: tuple[str, ...] | None) -> list[Edge]:
    """Edges of the re-resolved ``new`` that differ from before: every decision of combination ``ids``
    (the one just seen) and decisions of other combinations whose outcome changed."""
    before: dict[tuple[str, ...], tuple[tuple[str, str, str], ...]] = {}
    for c in old:
        for cb in c.combos:
            before[cb.ids] = cb.edges
    out: list[Edge] = []
    for cb in new.combos:
        if cb.ids == ids or before.get(cb.ids) != cb.edges:
            prev = set(before.get(cb.ids, ())) if cb.ids != ids else set()
            out.extend(e for e in _edges(cb.edges, cb.ts_ms, cb.event_id) if (e.a, e.b, e.reason) not in prev)
    return out


# --- control: split / block / unblock -----------------------------------------------------------------


class ControlError(ValueError):
    """A control message that cannot be applied; the message says what is wrong and what to send."""


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """``{"kind": "identity", "op": "split"|"block"|"unblock", "identifier": "type:value", "version": n}``
    (optional: ``ts_ms`` when it was decided, ``cause`` free text recorded on the changes)."""

    op: str
    identifier: str
    version: int


CONTROL_OPS = ("split", "block", "unblock")


def apply_control(message: Mapping[str, Any], rules: IdentityRules | None = None) -> ControlCommand:
    """Parse and validate one control message; raise :class:`ControlError` naming the bad field.

    With ``rules``, the identifier's type must be one of ``rules.priority``.
    """
    if not isinstance(message, Mapping):
        raise ControlError(f"identity control message must be a JSON object, got {type(message).__name__}")
    if message.get("kind") != "identity":
        raise ControlError(
            f"identity control message: 'kind' must be 'identity', got {message.get('kind')!r}"
        )
    unknown = set(message) - {"kind", "op", "identifier", "version", "ts_ms", "cause"}
    if unknown:
        raise ControlError(
            f"identity control message: unknown fields {sorted(unknown)}; "
            "allowed: kind, op, identifier, version, ts_ms, cause"
        )
    op = message.get("op")
    if op not in CONTROL_OPS:
        raise ControlError(f"identity control message: 'op' must be one of {list(CONTROL_OPS)}, got {op!r}")
    ident = message.get("identifier")
    if not isinstance(ident, str):
        raise ControlError("identity control message: 'identifier' must be a string like 'device_id:abc'")
    try:
        id_type, value = split_identifier(ident)
    except ValueError as e:
        raise ControlError(f"identity control message: {e}") from None
    if not value:
        raise ControlError(f"identity control message: identifier {ident!r} has an empty value")
    if rules is not None and id_type not in rules.rank:
        raise ControlError(
            f"identity control message: identifier type {id_type!r} is not configured (identity.priority: {list(rules.priority)})"
        )
    version = message.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ControlError(f"identity control message: 'version' must be a whole number ≥ 0, got {version!r}")
    return ControlCommand(op, ident, version)


def control(
    components: Mapping[str, Component],
    command: ControlCommand,
    rules: IdentityRules,
    ts_ms: int,
    cause: str = "",
) -> tuple[IdentityRules, StepResult]:
    """Apply ``command``: the new rules (overlay changed) and the re-resolution of the component that
    holds the identifier (``components`` must contain it if it exists; none: rules change only).

    ``split`` isolates the identifier (it keeps a person of its own, never linked again); ``block``
    ignores it entirely (its mapping becomes None); ``unblock`` lifts either. Each is reversible:
    the result equals ``resolve_batch`` of all observations under the new rules.
    """
    ident = command.identifier
    if command.op == "split":
        new_rules = rules.without([ident]).with_isolated([ident])
    elif command.op == "block":
        new_rules = rules.without([ident]).with_blocked([ident])
    else:
        new_rules = rules.without([ident])
    holder = next((c for c in components.values() if ident in c.idents), None)
    if holder is None:
        return new_rules, _NOOP
    resolved, eng = _resolve(holder.combos, new_rules)
    comp = Component(holder.cid, resolved, eng.persons(), frozenset(eng.detached))
    why = f"control:{command.op}:{cause}" if cause else f"control:{command.op}"
    mappings, changes = _diff(
        holder.person_of, comp.person_of, comp.idents, comp.person_by_id.keys(), ts_ms, why
    )
    edges = tuple(_changed_edges([holder], comp, None))
    result = StepResult(
        upserts={comp.cid: comp}, mappings=mappings, changes=changes, edges=edges, path="replay"
    )
    return new_rules, result


def split(
    components: Mapping[str, Component], ident: str, rules: IdentityRules, ts_ms: int, cause: str = ""
) -> tuple[IdentityRules, StepResult]:
    """Cut ``ident`` out of its person (isolate it); see :func:`control`."""
    return control(components, ControlCommand("split", ident, 0), rules, ts_ms, cause)


def block(
    components: Mapping[str, Component], ident: str, rules: IdentityRules, ts_ms: int, cause: str = ""
) -> tuple[IdentityRules, StepResult]:
    """Blocklist ``ident`` from now on and retroactively; see :func:`control`."""
    return control(components, ControlCommand("block", ident, 0), rules, ts_ms, cause)


def unblock(
    components: Mapping[str, Component], ident: str, rules: IdentityRules, ts_ms: int, cause: str = ""
) -> tuple[IdentityRules, StepResult]:
    """Undo ``split``/``block`` of ``ident``; see :func:`control`."""
    return control(components, ControlCommand("unblock", ident, 0), rules, ts_ms, cause)


# --- the state handling of an operator, in memory ------------------------------------------------------


class InMemoryGraph:
    """What the Flink operator does with :func:`step`, over dicts: the reference driver for tests/bench.

    State: ``components`` (cid → Component; in Flink one codec blob per cid in MapState), ``index``
    (identifier → cid), ``mapping`` (identifier → person id: what Redis ``zt:id:*`` holds) and the
    current ``rules`` (overlay changed by control messages).
    """

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules
        self.components: dict[str, Component] = {}
        self.index: dict[str, str] = {}
        self.mapping: dict[str, str] = {}

    def observe(self, obs: Observation) -> StepResult:
        cids = {c for t, v in obs.ids if (c := self.index.get(f"{t}:{v}")) is not None}
        res = step({c: self.components[c] for c in cids}, obs, self.rules)
        self.apply(res)
        return res

    def control(self, message: Mapping[str, Any], ts_ms: int, cause: str = "") -> StepResult:
        cmd = apply_control(message, self.rules)
        cid = self.index.get(cmd.identifier)
        comps = {cid: self.components[cid]} if cid is not None else {}
        self.rules, res = control(comps, cmd, self.rules, ts_ms, cause)
        self.apply(res)
        return res

    def apply(self, res: StepResult) -> None:
        for cid in res.deletes:
            del self.components[cid]
        self.components.update(res.upserts)
        self.index.update(res.index)
        for i, p in res.mappings.items():
            if p is None:
                self.mapping.pop(i, None)
            else:
                self.mapping[i] = p
