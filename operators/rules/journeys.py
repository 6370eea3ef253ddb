"""Multi-step journeys: entry, sends, waits, wait-for-event branches, conditions, exits (pure).

One shape, as for patterns::

    journey_step(state | None, event | None, timer_ms | None, journey, env=None) -> (state | None, sends, timers)

A person's position is a small frozen :class:`JourneyState` (ints and strings; the Flink job keeps it
in keyed state, so it survives restarts). Like patterns, journeys run in **event time**:

* An input (an :class:`Event`, or a :class:`TagChange` for a ``tag_added`` entry) that the journey
  cares about (its entry, an exit, or an event some ``wait_for`` step waits for) is buffered with
  the facts known at arrival (which of those it is: ``where`` filters are evaluated then) and a
  timer at its ``ts`` is asked for.
* A timer call (``timer_ms``: the watermark has passed it) processes, in event-time order, every
  buffered input with ``ts <= timer_ms`` and the current wait's deadline if ``<= timer_ms``
  (an input at exactly the deadline comes first: ``within`` is inclusive).
  Processing an input: not in the journey and it is the entry (journey not paused; first time, or
  ``reentry`` after an exit) → enter and run steps from the first one at the input's ts; in the
  journey and it is an exit with ``ts >= entered`` → exit ``exit:<event_type>``; waiting for it
  with ``since <= ts <= until`` → continue with ``on_event`` at its ts. A deadline → ``next``
  (``wait``) or ``on_timeout`` (``wait_for``) at the deadline.
* Running steps: ``send`` emits a :class:`JourneySend` (the engine runs that rule's condition,
  actions and guard rails) and goes on; ``branch`` takes the first ``if`` that is true in ``env``
  (evaluated at the step's time) else ``else``; ``wait``/``wait_for`` stop and ask for a timer at
  the deadline; ``end`` exits ``completed``. More than 1,000 steps in one go exit ``step_limit``.

Inputs with ``ts <= frontier`` (the last timer time at which something was processed) are too
late: dropped and counted.
State is kept only for persons who entered (their position, or how they left, which also blocks
re-entry) and, briefly, for buffered inputs: a person who never entered returns to ``None`` once
the buffer is processed (so a register that arrives later than that, behind the watermark, still
enters, without the inputs processed before it).
A new journey version keeps persons whose current step still exists (they continue on the new
definition) and exits the others with ``version_changed``. A paused journey admits nobody; persons
inside keep moving.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from operators.rules.model import Event, Journey, TagChange
from operators.rules.patterns import matcher_accepts

__all__ = ["JourneyInput", "JourneySend", "JourneyState", "journey_step"]

MAX_STEPS_AT_ONCE = 1000


@dataclass(frozen=True, slots=True)
class JourneyInput:
    """A buffered input: its time, id, type and what it is to the journey (``entry``, ``exit``,
    ``wait:<step>``)."""

    ts_ms: int
    input_id: str
    input_type: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JourneyState:
    """Where one person is in one journey.

    ``step`` is the current step while in the journey (None outside it); ``wait_since``/
    ``wait_until`` bound the current wait; ``entry_id``/``entered_ts`` name the input that started
    the current (or last) instance; ``exit_reason``/``exited_ts`` how the last one ended.
    """

    version: int
    frontier: int | None = None
    buffer: tuple[JourneyInput, ...] = ()
    step: str | None = None
    entry_id: str | None = None
    entered_ts: int | None = None
    wait_since: int | None = None
    wait_until: int | None = None
    exit_reason: str | None = None
    exited_ts: int | None = None
    too_late: int = 0

    @property
    def active(self) -> bool:
        return self.step is not None


@dataclass(frozen=True, slots=True)
class JourneySend:
    """A ``send`` step reached at event time ``ts_ms``: run rule ``rule_id`` for the person."""

    journey_id: str
    journey_version: int
    step_id: str
    rule_id: str
    entry_id: str
    ts_ms: int

    @property
    def trigger_key(self) -> str:
        return f"journey:{self.journey_id}:{self.entry_id}:{self.step_id}"


def _input_of(event: Event | TagChange) -> tuple[int, str, str]:
    if isinstance(event, TagChange):
        return event.ts_ms, f"tag{'+' if event.added else '-'}{event.tag}@{event.ts_ms}", "tag_added"
    return event.ts_ms, event.event_id, event.event_type


def _roles(event: Event | TagChange, journey: Journey, env: Mapping[str, Any] | None) -> tuple[str, ...]:
    roles: list[str] = []
    entry = journey.entry
    where = journey.entry_where
    if isinstance(event, TagChange):
        hit = event.added and entry.kind == "tag_added" and entry.values[0] == event.tag
        return ("entry",) if hit and (where is None or where.evaluate(env or {}, event.ts_ms) is True) else ()
    hit = entry.kind == "event" and entry.values[0] == event.event_type
    if hit and (where is None or where.evaluate(env or {}, event.ts_ms) is True):
        roles.append("entry")
    if any(matcher_accepts(m, event, env) for m in journey.exits):
        roles.append("exit")
    for s in journey.steps.values():
        if s.matcher is not None and matcher_accepts(s.matcher, event, env):
            roles.append(f"wait:{s.id}")
    return tuple(roles)


def journey_step(state: JourneyState | None, event: Event | TagChange | None, timer_ms: int | None,
                 journey: Journey, env: Mapping[str, Any] | None = None,
                 ) -> tuple[JourneyState | None, tuple[JourneySend, ...], tuple[int, ...]]:
    """Buffer an input, or process what is due at ``timer_ms`` (see the module docstring).

    ``env`` is the expression environment (entry/exit/wait ``where`` filters at buffering, branch
    conditions at processing). Returns the new state (None while the person never got involved),
    the sends in event-time order and the timer times to register.
    """
    if event is not None:
        roles = _roles(event, journey, env)
        if not roles:
            return state, (), ()
        if state is None:
            if roles == ("entry",) and journey.paused:
                return None, (), ()
            state = JourneyState(journey.version)  # also for exits/waits: an earlier entry may still come
        ts, iid, itype = _input_of(event)
        if state.frontier is not None and ts <= state.frontier:
            return replace(state, too_late=state.too_late + 1), (), ()
        if any(b.input_id == iid for b in state.buffer):
            return state, (), ()
        item = JourneyInput(ts, iid, itype, roles)
        buf = tuple(sorted(state.buffer + (item,), key=lambda b: (b.ts_ms, b.input_id)))
        return replace(state, buffer=buf), (), (ts,)
    if state is None or timer_ms is None:
        return state, (), ()
    due = (state.buffer and state.buffer[0].ts_ms <= timer_ms) or (
        state.active and (state.version != journey.version or (state.wait_until or timer_ms + 1) <= timer_ms))
    if not due:
        return state, (), ()
    return _process(state, timer_ms, journey, env)


class _Run:
    def __init__(self, st: JourneyState, journey: Journey, env: Mapping[str, Any] | None):
        self.st = st
        self.journey = journey
        self.env = env or {}
        self.sends: list[JourneySend] = []
        self.timers: list[int] = []

    def exit(self, reason: str, ts: int) -> None:
        self.st = replace(self.st, step=None, wait_since=None, wait_until=None, exit_reason=reason, exited_ts=ts)

    def run(self, step_id: str, ts: int) -> None:
        for _ in range(MAX_STEPS_AT_ONCE):
            step = self.journey.steps[step_id]
            self.st = replace(self.st, step=step_id, wait_since=None, wait_until=None)
            if step.kind == "end":
                self.exit("completed", ts)
                return
            if step.kind in ("wait", "wait_for"):
                until = ts + step.duration_ms
                self.st = replace(self.st, wait_since=ts, wait_until=until)
                self.timers.append(until)
                return
            if step.kind == "send":
                self.sends.append(JourneySend(self.journey.id, self.journey.version, step.id, step.rule or "",
                                              self.st.entry_id or "", ts))
                step_id = step.next or ""
            else:  # branch
                step_id = next((b.next for b in step.branches if b.condition.evaluate(self.env, ts) is True),
                               step.otherwise or "")
        self.exit("step_limit", ts)

    def on_input(self, b: JourneyInput) -> None:
        st = self.st
        if not st.active:
            may_enter = st.entry_id is None or (self.journey.reentry and (st.exited_ts or 0) < b.ts_ms)
            if "entry" in b.roles and may_enter and not self.journey.paused:
                self.st = replace(st, entry_id=b.input_id, entered_ts=b.ts_ms, exit_reason=None, exited_ts=None)
                self.run(self.journey.first_step, b.ts_ms)
            return
        if "exit" in b.roles and b.ts_ms >= (st.entered_ts or 0):
            self.exit(f"exit:{b.input_type}", b.ts_ms)
        elif (f"wait:{st.step}" in b.roles and st.wait_since is not None and st.wait_until is not None
              and st.wait_since <= b.ts_ms <= st.wait_until):
            step = self.journey.steps[st.step or ""]
            self.run(step.on_event or "", b.ts_ms)

    def on_deadline(self) -> None:
        step = self.journey.steps[self.st.step or ""]
        until = self.st.wait_until or 0
        self.run((step.next if step.kind == "wait" else step.on_timeout) or "", until)


def _process(st: JourneyState, timer_ms: int, journey: Journey, env: Mapping[str, Any] | None,
             ) -> tuple[JourneyState | None, tuple[JourneySend, ...], tuple[int, ...]]:
    r = _Run(st, journey, env)
    if st.active and st.version != journey.version:
        if st.step not in journey.steps:
            r.exit("version_changed", timer_ms)
        r.st = replace(r.st, version=journey.version)
    i, buf = 0, st.buffer
    while True:
        b = buf[i] if i < len(buf) and buf[i].ts_ms <= timer_ms else None
        until = r.st.wait_until if r.st.active else None
        deadline_due = until is not None and until <= timer_ms and (b is None or until < b.ts_ms)
        if deadline_due:
            r.on_deadline()
        elif b is not None:
            i += 1
            r.on_input(b)
        else:
            break
    frontier = timer_ms if st.frontier is None else max(st.frontier, timer_ms)
    new = replace(r.st, buffer=buf[i:], frontier=frontier)
    timers = tuple(sorted({t for t in r.timers if t > timer_ms}))
    if new.entry_id is None and not new.buffer:
        return None, tuple(r.sends), timers  # never entered and nothing pending: keep no state
    return new, tuple(r.sends), timers
