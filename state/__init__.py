"""Every keyed state of the job's Python operators, declared in one module per family.

The job's SQL operators (dedup by event_id, the counter, bucket and combination aggregates) keep their
state on the JVM, bounded by ``table.exec.state.ttl`` (``pipelines.events.job_options``: max(dedup TTL,
allowed lateness + skew + 1 h)). The Python operators declare theirs here: a descriptor name with a
version suffix, a codec with a version, and a TTL or the reason there is none. ``DECLARATIONS`` lists them
all; tests/unit/test_state_declarations.py checks the list against the code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StateDecl:
    """One piece of keyed (or broadcast) state: ``name`` (``<family>-<what>-v<N>``), the module that declares
    it, its kind, what it is keyed by, and ``ttl``: the TTL, or ``"none: <why>"``."""

    name: str
    module: str
    kind: str
    key: str
    ttl: str


DECLARATIONS: tuple[StateDecl, ...] = (
    StateDecl("identity-components-v1", "state.identity", "map", "the graph (one key)",
              "none: an identity outlives any inactivity; bounded by distinct identifier combinations"),
    StateDecl("identity-index-v1", "state.identity", "map", "the graph (one key)",
              "none: as identity-components-v1"),
    StateDecl("identity-overlay-v1", "state.identity", "value", "the graph (one key)",
              "none: blocks and splits set by control messages last until lifted"),
    StateDecl("person-v1", "state.person", "value", "person",
              "none: inactivity tags and consent must not expire on processing time; bounded by the windows"),
    StateDecl("person-minutes-v1", "state.person", "map", "person",
              "none: the kept 90 days are folded by event time (a replay folds the same)"),
    StateDecl("tags-tagset-v1", "state.tags", "broadcast map", "-", "none: the running tag set"),
    StateDecl("rules-control-log-v1", "state.rules", "broadcast map", "-", "none: the accepted rule changes"),
    StateDecl("rules-budget-v1", "state.rules", "value", "campaign", "none: a budget is a lifetime total"),
    StateDecl("attribution-person-v1", "state.attribution", "value", "person",
              "none: the step forgets deliveries older than the attribution window by event time"),
    StateDecl("recs-person-v1", "state.recs", "value", "person",
              "none: the step drops the window recs.person_ttl_ms after the last event, by event time"),
    StateDecl("recs-norm-v1", "state.recs", "value", "item",
              "none: the step drops the norm recs.pair_ttl_ms after its last update, by event time"),
    StateDecl("recs-neighbours-v1", "state.recs", "value", "item",
              "none: capped at max_neighbours x 1.25; pairs dropped recs.pair_ttl_ms after their last update"),
    StateDecl("pricing-item-v1", "state.pricing", "value", "item",
              "none: the step drops the item pricing.item_ttl_ms after its last input, by event time"),
    StateDecl("pricing-control-log-v1", "state.pricing", "broadcast map", "-",
              "none: the accepted pricing policy sets (at most 16 kept by the step)"),
    StateDecl("experiments-registry-v2", "state.experiments", "value", "the registry (one key)",
              "none: the definitions live as long as the job"),
)
