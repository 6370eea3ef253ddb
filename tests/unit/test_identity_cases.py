"""Helpers shared by the identity tests (hand-written observations, independent person ids, an
in-memory driver), and a check that they agree with the implementation."""

from __future__ import annotations

import hashlib

from operators.identity import IdentityRules, Observation
from operators.identity.in_memory import InMemoryGraph

RULES = IdentityRules()


def ob(ts: int, eid: str, **ids: str) -> Observation:
    return Observation(tuple(ids.items()), ts, eid)


def pid(ident: str) -> str:
    """Person id written out independently of operators.identity.model.person_id."""
    return "p" + hashlib.sha256(ident.encode()).hexdigest()[:16]


def detached_pid(ident: str) -> str:
    return pid("detached:" + ident)


def feed(observations, rules: IdentityRules = RULES) -> InMemoryGraph:
    g = InMemoryGraph(rules)
    for o in observations:
        g.observe(o)
    return g


def test_the_helpers_agree_with_the_implementation():
    from operators.identity.model import detached_person_id, person_id

    assert (
        pid("user_id:A") == person_id("user_id:A")
        and pid("user_id:A").startswith("p")
        and len(pid("x:y")) == 17
    )
    assert detached_pid("device_id:D") == detached_person_id("device_id:D") != pid("device_id:D")
