"""Helpers shared by the identity tests: observations written by hand and an in-memory driver."""

from __future__ import annotations

import hashlib

from operators.identity import IdentityRules, Observation
from operators.identity.graph import InMemoryGraph

RULES = IdentityRules()


def ob(ts: int, eid: str, **ids: str) -> Observation:
    return Observation(tuple(ids.items()), ts, eid)


def pid(ident: str) -> str:
    """Person id written out independently of operators.identity.graph.person_id."""
    return "p" + hashlib.sha256(ident.encode()).hexdigest()[:16]


def detached_pid(ident: str) -> str:
    return pid("detached:" + ident)


def feed(observations, rules: IdentityRules = RULES) -> InMemoryGraph:
    g = InMemoryGraph(rules)
    for o in observations:
        g.observe(o)
    return g
