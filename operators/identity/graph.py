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

import heapq
from collections.abc import Iterable, Mapping

from .engine import _Engine, _resolve
from .model import (
    _FAST,
    _NOOP,
    ACCEPTED_REASONS,
    Change,
    Combo,
    Component,
    Edge,
    Observation,
    StepResult,
    component_id,
)
from .rules import IdentityRules


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
