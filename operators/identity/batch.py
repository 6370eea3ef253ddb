"""The batch definition of the identity resolution — the oracle the streaming ``graph.step`` must equal.

Written independently of the streaming graph (``graph.py``, ``engine.py``; no shared code beyond the
rules): a classic union-find with path halving over every observation (no de-duplication), sorted once
into canonical order ``(ts_ms, event_id, identifiers)``. Per observation: identifiers strongest first; the first one that
is not isolated is the anchor; each other identifier is linked to it; a link between two persons is
merged unless ``IdentityRules.refusal`` refuses it (the union would exceed a per-type limit, or the
other identifier is of a shareable type and both persons hold an identifier of one same
non-shareable type), in which case the other identifier is detached: it is never linked again,
and its old person is rebuilt (fresh nodes for every member, then unions along the accepted links
that remain), so whoever was joined only through it leaves.
The older root survives: smaller founding key (first ts, first event_id, rank, identifier) of its
founder. Person id = ``"p" + sha256(founder)[:16]``, or of ``"detached:<identifier>"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from .rules import IdentityRules


def resolve_batch(
    observations: Iterable[Any], rules: IdentityRules, *, guard_rails: bool = True
) -> dict[str, str]:
    """identifier (``"type:value"``) → person id for every identifier that has a person.

    ``observations``: anything with ``ids`` (``(type, value)`` pairs), ``ts_ms`` and ``event_id``.
    Junk, unknown types and dynamically blocked identifiers get no person. With
    ``guard_rails=False`` the limits and shareable types are ignored (plain connected components;
    for cross-checks).
    """
    order = rules.priority
    rank = {t: i for i, t in enumerate(order)}
    blocked, isolated = rules.blocked_identifiers, rules.isolated_identifiers

    rows = []
    for o in observations:
        pairs = sorted({(rank[t], v) for t, v in o.ids if t in rank and not rules.is_junk(t, v)})
        if pairs:
            rows.append((o.ts_ms, o.event_id, tuple(f"{order[r]}:{v}" for r, v in pairs)))
    rows.sort()

    parent: dict[str, str] = {}  # node → parent node; a node is "<identifier>#<generation>"
    node: dict[str, str] = {}  # identifier → its current node
    gen: dict[str, int] = {}  # identifier → generation of its current node
    first: dict[str, tuple[int, str, int, str]] = {}  # identifier → founding key (first ts, eid, rank, id)
    age: dict[str, tuple[int, str, int, str]] = {}  # root → founding key of its founder
    size: dict[str, list[int]] = {}  # root → identifiers per type rank
    held: dict[str, list[str]] = {}  # root → identifiers
    linked: dict[str, set[str]] = {}  # accepted links between identifiers not cut
    cut: set[str] = set()  # detached identifiers

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def fresh(i: str) -> str:
        gen[i] = gen.get(i, -1) + 1
        n = f"{i}#{gen[i]}"
        node[i] = parent[n] = n
        r = first[i][2]
        age[n] = first[i]
        size[n] = [1 if k == r else 0 for k in range(len(order))]
        held[n] = [i]
        return n

    def union(ra: str, rb: str) -> None:
        keep, gone = (ra, rb) if age[ra] < age[rb] else (rb, ra)
        parent[gone] = keep
        size[keep] = [a + b for a, b in zip(size[keep], size.pop(gone), strict=True)]
        held[keep] += held.pop(gone)
        del age[gone]

    def detach(x: str) -> None:
        """x gets a person of its own; its old person is rebuilt from the links that remain."""
        old = find(node[x])
        members = held.pop(old)
        del size[old], age[old]
        for n in linked.pop(x, ()):
            linked[n].discard(x)
        cut.add(x)
        for m in members:
            fresh(m)
        for m in members:
            for n in linked.get(m, ()):
                ra, rb = find(node[m]), find(node[n])
                if ra != rb:
                    union(ra, rb)

    for ts, eid, idents in rows:
        idents = tuple(i for i in idents if i not in blocked)
        if not idents:
            continue
        for i in idents:
            if i not in node:
                first[i] = (ts, eid, rank[i.split(":", 1)[0]], i)
                fresh(i)
        free = [i for i in idents if i not in isolated and i not in cut]
        if not free:
            continue
        head = free[0]
        for other in free[1:]:
            ra, rb = find(node[head]), find(node[other])
            if ra != rb:
                if guard_rails and rules.refusal(first[other][2], size[ra], size[rb]) is not None:
                    detach(other)
                    continue
                union(ra, rb)
            linked.setdefault(head, set()).add(other)
            linked.setdefault(other, set()).add(head)

    labels = {x: ("detached:" + x if x in cut else age[find(n)][3]) for x, n in node.items()}
    ids = {f: "p" + hashlib.sha256(f.encode("utf-8")).hexdigest()[:16] for f in set(labels.values())}
    return {x: ids[f] for x, f in labels.items()}


def partition(mapping: dict[str, str]) -> set[frozenset[str]]:
    """The groups of identifiers of an identifier → person mapping."""
    groups: dict[str, set[str]] = {}
    for i, p in mapping.items():
        groups.setdefault(p, set()).add(i)
    return {frozenset(g) for g in groups.values()}
