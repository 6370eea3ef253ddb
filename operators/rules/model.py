"""Frozen definitions and inputs of the strategy engine (pure: no pyflink, no clients, no clock).

Definitions (:class:`Rule`, :class:`Pattern`, :class:`Journey`, :class:`Policy`) are built only by
:mod:`operators.rules.schema` from validated YAML/JSON, so every instance here is already checked.
Inputs (:class:`Event`, :class:`TagChange`) are what the Flink job hands to
:func:`operators.rules.engine.evaluate`.

Mappings inside frozen instances (``params``, ``props``, ``steps``) are never mutated after
construction; treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from config.plugins import channel_names

#: The built-in channels and the installed channel plugins' (config/plugins.py).
CHANNELS = channel_names()
TRIGGER_KINDS = ("event", "tag_added", "tag_removed", "pattern", "journey")
PATTERN_KINDS = ("absence", "count", "sequence")
CONSENT_MODES = ("opt_in", "opt_out", "none")


@dataclass(frozen=True, slots=True)
class Event:
    """One deduplicated event of one person, as the rules stage sees it.

    ``ts_ms`` is event time (epoch ms). ``props`` is the envelope's ``props`` object.
    """

    event_id: str
    event_type: str
    ts_ms: int
    person_id: str
    props: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TagChange:
    """A tag was added to (``added``) or removed from a person at event time ``ts_ms``."""

    person_id: str
    tag: str
    added: bool
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Trigger:
    """What makes a rule run: ``kind`` in TRIGGER_KINDS, ``values`` the event types (``event``),
    or the one tag, pattern id or journey id."""

    kind: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ActionSpec:
    channel: str
    template: str
    #: Static params, and the placeholders of the computed ones (``"${expr}"`` as written).
    params: Mapping[str, Any] = field(default_factory=dict)
    #: Computed params: name → compiled expression (a param written ``"${event.props.store_id}"``), evaluated
    #: when the action is built, over the same ``event``/``profile``/``tags`` as the rule's condition.
    exprs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most ``max`` sends in any ``window_ms``.

    ``channels`` None: a rule's own cap (sends of that rule to that person). Otherwise a policy
    cap over the person's sends to any of ``channels`` (one channel: a per-channel cap; several: a
    cap across all marketing messages). ``name`` appears in the suppression detail.
    """

    name: str
    max: int
    window_ms: int
    channels: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local wall-clock window [start, end) in minutes of the day; wraps midnight when end < start."""

    start_min: int
    end_min: int
    timezone: str | None
    mode: str  # "hold" | "drop"


@dataclass(frozen=True, slots=True)
class Budget:
    campaign: str
    max: int


@dataclass(frozen=True, slots=True)
class Constraints:
    frequency: tuple[FrequencyCap, ...] = ()
    quiet_hours: QuietHours | None = None
    consent_required: bool = False
    consent_channel: str | None = None
    budget: Budget | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    version: int
    name: str
    paused: bool
    priority: int
    group: str | None
    campaign: str | None
    trigger: Trigger
    condition_text: str | None
    condition: Any  # operators.expr.Expr | None
    actions: tuple[ActionSpec, ...]
    constraints: Constraints
    source: str = "<control>"
    #: tags the condition cannot be true without (operators.rules.prefilter); the engine skips
    #: the condition for persons lacking any of them
    required_tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class EventMatcher:
    """An event type with an optional ``where`` expression over ``event`` (and profile/tags)."""

    event_type: str
    where_text: str | None = None
    where: Any = None  # operators.expr.Expr | None


@dataclass(frozen=True, slots=True)
class Pattern:
    """A sequence/absence/count pattern; see :mod:`operators.rules.patterns` for the semantics.

    absence: ``matchers`` = (start, cancel); count: (event,); sequence: the steps in order.
    ``by`` is a dotted path into the event (``props.item_id``) that partitions the pattern.
    """

    id: str
    version: int
    name: str
    paused: bool
    kind: str
    matchers: tuple[EventMatcher, ...]
    within_ms: int
    count: int = 0
    by: tuple[str, ...] | None = None
    lateness_ms: int = 0
    source: str = "<control>"

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(m.event_type for m in self.matchers)


@dataclass(frozen=True, slots=True)
class Branch:
    condition_text: str
    condition: Any
    next: str


@dataclass(frozen=True, slots=True)
class Step:
    """One journey step. ``kind``: send | wait | wait_for | branch | end.

    send: run rule ``rule`` (its trigger is this journey), then ``next``.
    wait: ``duration_ms`` later, ``next``. wait_for: ``matcher`` within ``duration_ms`` →
    ``on_event``, else ``on_timeout``. branch: first true ``branches`` → its next, else ``otherwise``.
    """

    id: str
    kind: str
    rule: str | None = None
    next: str | None = None
    duration_ms: int = 0
    matcher: EventMatcher | None = None
    on_event: str | None = None
    on_timeout: str | None = None
    branches: tuple[Branch, ...] = ()
    otherwise: str | None = None


@dataclass(frozen=True, slots=True)
class Journey:
    id: str
    version: int
    name: str
    paused: bool
    entry: Trigger  # kind event (one type) or tag_added
    entry_where_text: str | None
    entry_where: Any
    exits: tuple[EventMatcher, ...]
    steps: Mapping[str, Step]
    first_step: str
    reentry: bool = False
    source: str = "<control>"

    @property
    def event_types(self) -> frozenset[str]:
        types = {m.event_type for m in self.exits}
        types.update(s.matcher.event_type for s in self.steps.values() if s.matcher is not None)
        if self.entry.kind == "event":
            types.update(self.entry.values)
        return frozenset(types)


@dataclass(frozen=True, slots=True)
class Policy:
    """Rule-set wide guard settings: default time zone, policy frequency caps, consent modes."""

    default_timezone: str = "Asia/Shanghai"
    frequency: tuple[FrequencyCap, ...] = ()
    consent: Mapping[str, str] = field(
        default_factory=lambda: {"email": "opt_out", "sms": "opt_in", "push": "opt_out",
                                 "webhook": "none", "coupon": "none"})
