"""The resolution engine: folds identifier combinations, in canonical order, into persons (merges,
the guard rails' refusals, retroactive detaches, founders). Used by ``graph.step`` and ``control``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .model import ACCEPTED_REASONS, Combo, Component, Person, detached_person_id, person_id
from .rules import IdentityRules


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
