"""The strategy engine: one person's rules, patterns, journeys and guard rails per input (pure).

``evaluate(ruleset, state, event, profile, tags, now_ms) -> EngineResult`` is the whole contract
the Flink job needs (keyed by person; the rule set comes from broadcast state):

* ``event`` an :class:`Event`: consent/unsubscribe events update consent; the event is buffered
  by the patterns and journeys that consume it (they act on timers, in event time); the rules
  triggered by its type are evaluated now. ``now_ms`` is the time conditions are evaluated at
  (the job passes the event's ts, so a replay decides the same).
* ``event`` a :class:`TagChange`: rules on that tag being added/removed; journeys entered by it.
* ``event`` None: a timer fired at ``now_ms`` (the watermark passed it). Everything due runs in
  event-time order: held actions whose quiet hours ended, pattern matches (→ rules triggered by
  the pattern), journey steps (→ the rules they send). Conditions of these are evaluated at the
  trigger's own event time.

Rules found by the trigger index are evaluated (``condition`` true or absent = firing; a condition
whose top-level ``'x' in tags`` conjuncts the person fails is skipped without evaluating it, see
:mod:`operators.rules.prefilter`; ``rule_evaluations`` counts the rest), then every
candidate action passes the guard rails of :mod:`operators.rules.guards` in their fixed order.
The result holds the actions to emit (those with ``budget_max`` go to the campaign-keyed
:func:`operators.rules.guards.budget_step` first), the suppressed actions with their reasons,
the actions held by quiet hours, the timers to register and the new state (None: clear the key).

Expression environment: ``event`` (``type``, ``id``, ``ts``, ``props``; for tag changes ``tag``),
``profile`` (the mapping given), ``tags`` (a set), ``person`` (``id``), and for pattern triggers
``match`` (``pattern``, ``key``, ``count``, ``ts``, ``start_ts``), for journey sends ``journey``
(``id``, ``step``, ``entered``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from operators.messages import Action
from operators.rules.guards import (
    Consent,
    Send,
    consent_allows,
    frequency_block,
    person_zone,
    prune_sends,
    quiet_release_ms,
    select_by_group,
    update_consent,
)
from operators.rules.journeys import JourneyInput, JourneySend, JourneyState, journey_step
from operators.rules.model import Event, Rule, TagChange
from operators.rules.patterns import Buffered, Match, PatternState, pattern_step
from operators.rules.registry import RuleSet

__all__ = [
    "EngineResult", "Held", "PersonState", "Suppressed", "action_id", "evaluate", "next_due",
    "prune_state", "state_from_json", "state_to_json",
]

STATE_CODEC_VERSION = 1
#: ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)``, without building an encoder per call.
_ID_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def action_id(rule_id: str, version: int, person_id: str, trigger_key: str, index: int = 0) -> str:
    """Deterministic id of one action: sha256 over (rule, version, person, trigger, action index), 32 hex.

    ``index`` is the action's position in the rule's ``actions`` (0 for the first). The same
    input replayed after a restore gives the same id, which the channel workers deduplicate on.
    """
    payload = _ID_JSON.encode([rule_id, version, person_id, trigger_key, index])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Suppressed:
    """An action a guard stopped: ``reason`` (group_excluded, no_consent, quiet_hours,
    frequency_capped, budget_exhausted, rule_unavailable) and a human ``detail``."""

    action: Action
    reason: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {**self.action.to_json(), "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Held:
    """An action waiting for the end of quiet hours (``release_ms``, event time)."""

    action: Action
    release_ms: int
    firing: str = ""


@dataclass(frozen=True, slots=True)
class PersonState:
    """Everything the engine keeps per person (keyed state; codec: :func:`state_to_json`).

    ``consent`` latest decision per channel; ``sends`` recent sends (pruned to the longest cap
    window); ``held`` actions waiting for quiet hours to end; ``patterns``/``journeys`` per id.
    """

    person_id: str
    consent: tuple[Consent, ...] = ()
    sends: tuple[Send, ...] = ()
    held: tuple[Held, ...] = ()
    patterns: tuple[tuple[str, PatternState], ...] = ()
    journeys: tuple[tuple[str, JourneyState], ...] = ()

    def is_empty(self) -> bool:
        return not (self.consent or self.sends or self.held or self.patterns or self.journeys)


@dataclass(frozen=True, slots=True)
class EngineResult:
    actions: tuple[Action, ...] = ()
    suppressed: tuple[Suppressed, ...] = ()
    held: tuple[Held, ...] = ()
    timers: tuple[int, ...] = ()
    new_state: PersonState | None = None
    matches: tuple[Match, ...] = ()
    rule_evaluations: int = 0
    too_late: int = 0  # inputs patterns/journeys dropped as behind their processed time (a counter)


@dataclass(frozen=True, slots=True)
class _Trigger:
    key: str
    ts_ms: int
    info: Mapping[str, Any]


def _params(static: Mapping[str, Any], exprs: Mapping[str, Any], env: Mapping[str, Any],
            eval_ms: int) -> dict[str, Any]:
    """An action's params: the static ones, each computed one (``${expr}``) replaced by its value as JSON
    text would carry it (a decimal as its text, a set as a sorted list; a missing value: null)."""
    out = dict(static)
    for k, e in exprs.items():
        out[k] = _json_value(e.evaluate(env, eval_ms))
    return out


def _json_value(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, set | frozenset):
        return sorted(map(str, v))
    if isinstance(v, tuple):
        return list(v)
    return v


def prune_state(ruleset: RuleSet, state: PersonState) -> PersonState:
    """Drop the state of deleted patterns and journeys (a deleted rule's held actions are
    suppressed with ``rule_unavailable`` when they come due)."""
    pats = tuple((pid, ps) for pid, ps in state.patterns if pid in ruleset.patterns)
    jrs = tuple((jid, js) for jid, js in state.journeys if jid in ruleset.journeys)
    if len(pats) == len(state.patterns) and len(jrs) == len(state.journeys):
        return state
    return replace(state, patterns=pats, journeys=jrs)


class _Eval:
    """One evaluate() call: accumulates outputs while updating the person's state."""

    def __init__(self, ruleset: RuleSet, st: PersonState, profile: Mapping[str, Any], tags: Any):
        self.rs = ruleset
        self.person_id = st.person_id
        # working copies of the state, put back together once by state()
        self.consent = st.consent
        self.sends = st.sends
        self.held_state = list(st.held)
        self.patterns = dict(st.patterns)
        self.journeys = dict(st.journeys)
        self.profile = profile
        self.tags = tags if isinstance(tags, (set, frozenset)) else frozenset(tags or ())
        self.actions: list[Action] = []
        self.suppressed: list[Suppressed] = []
        self.held: list[Held] = []
        self.timers: set[int] = set()
        self.matches: list[Match] = []
        self.evaluations = 0
        self.too_late = 0
        self.base_env: dict[str, Any] = {"profile": profile, "tags": self.tags, "person": {"id": st.person_id}}

    def state(self) -> PersonState | None:
        st = PersonState(self.person_id, self.consent, self.sends, tuple(self.held_state),
                         tuple(sorted(self.patterns.items())), tuple(sorted(self.journeys.items())))
        return None if st.is_empty() else st

    def env(self, event: Mapping[str, Any] | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        env = dict(self.base_env)
        env["event"] = event
        if extra:
            env.update(extra)
        return env

    # ---- rules and guards

    def fire(self, rules: tuple[Rule, ...], trig: _Trigger, env: Mapping[str, Any], eval_ms: int) -> None:
        firing = []
        tags = self.tags
        for r in rules:
            if r.required_tags and not r.required_tags <= tags:
                continue  # a top-level "'x' in tags" conjunct is false: so is the condition
            self.evaluations += 1
            cond = r.condition
            if cond is None or cond.evaluate(env, eval_ms) is True:
                firing.append(r)
        if not firing:
            return
        acting, excluded = select_by_group(firing)
        for r, winner in excluded:
            for a in self.build(r, trig, env, eval_ms):
                self.suppressed.append(Suppressed(a, "group_excluded", f"group {r.group}: rule {winner.id} "
                                                  f"(priority {winner.priority}) acts"))
        for r in acting:
            actions = self.build(r, trig, env, eval_ms)
            for a in actions:
                self.guard(a, r, actions[0].action_id[:16])

    def build(self, r: Rule, trig: _Trigger, env: Mapping[str, Any], eval_ms: int) -> list[Action]:
        budget = r.constraints.budget
        return [Action(action_id(r.id, r.version, self.person_id, trig.key, i), r.id, r.version,
                       self.person_id, spec.channel, spec.template,
                       _params(spec.params, spec.exprs, env, eval_ms) if spec.exprs else spec.params,
                       budget.campaign if budget else r.campaign, trig.info, trig.ts_ms, r.priority,
                       budget.max if budget else None)
                for i, spec in enumerate(r.actions)]

    def guard(self, a: Action, r: Rule, firing: str) -> None:
        ok, detail = consent_allows(self.consent, a.channel, self.rs.policy, r)
        if not ok:
            self.suppressed.append(Suppressed(a, "no_consent", detail))
            return
        qh = r.constraints.quiet_hours
        if qh is not None:
            tz = person_zone(self.profile, qh.timezone, self.rs.policy)
            release = quiet_release_ms(qh, tz, a.ts_ms)
            if release is not None:
                if qh.mode == "drop":
                    self.suppressed.append(Suppressed(a, "quiet_hours", f"{tz} quiet hours, dropped"))
                    return
                h = Held(replace(a, ts_ms=release), release, firing)
                self.held_state.append(h)
                self.held.append(h)
                self.timers.add(release)
                return
        capped = frequency_block(self.sends, r, a.channel, self.rs.policy, a.ts_ms, firing)
        if capped is not None:
            self.suppressed.append(Suppressed(a, "frequency_capped", capped))
            return
        sends = self.sends + (Send(a.ts_ms, r.id, a.channel, firing),)
        window = self.rs.max_window_ms
        self.sends = prune_sends(sends, max(s.ts_ms for s in sends), window)
        if self.sends:
            self.timers.add(a.ts_ms + window)  # to forget this send when no cap can count it any more
        self.actions.append(a)

    # ---- timer-driven work

    def release(self, h: Held) -> None:
        r = self.rs.rules.get(h.action.rule_id)
        self.held_state = [x for x in self.held_state if x is not h]
        if r is None or r.paused:
            why = "deleted" if r is None else "paused"
            self.suppressed.append(Suppressed(h.action, "rule_unavailable", f"rule {h.action.rule_id} {why} while held"))
            return
        self.guard(h.action, r, h.firing)

    def on_match(self, m: Match) -> None:
        self.matches.append(m)
        rules = self.rs.rules_for_pattern(m.pattern_id)
        if not rules:
            return
        match = {"pattern": m.pattern_id, "key": m.key, "count": m.count, "ts": m.ts_ms, "start_ts": m.start_ts_ms}
        trig = _Trigger(m.trigger_key, m.ts_ms, {"type": "pattern", "pattern": m.pattern_id, "key": m.key,
                                                  "event_id": m.event_id, "ts_ms": m.ts_ms})
        self.fire(rules, trig, self.env(None, {"match": match}), m.ts_ms)

    def on_send(self, s: JourneySend) -> None:
        r = self.rs.rules.get(s.rule_id)
        if r is None or r.paused:
            return
        trig = _Trigger(s.trigger_key, s.ts_ms, {"type": "journey", "journey": s.journey_id, "step": s.step_id,
                                                 "event_id": s.entry_id, "ts_ms": s.ts_ms})
        journey = {"id": s.journey_id, "step": s.step_id}
        self.fire((r,), trig, self.env(None, {"journey": journey}), s.ts_ms)


def _event_env(event: Event) -> dict[str, Any]:
    return {"type": event.event_type, "id": event.event_id, "ts": event.ts_ms, "props": event.props}


def evaluate(ruleset: RuleSet, state: PersonState | None, event: Event | TagChange | None,
             profile: Mapping[str, Any] | None, tags: Any, now_ms: int) -> EngineResult:
    """Run one input for one person (see the module docstring). Never raises on data."""
    if state is None and event is None:
        return EngineResult()
    person = event.person_id if event is not None else state.person_id  # type: ignore[union-attr]
    ev = _Eval(ruleset, prune_state(ruleset, state or PersonState(person)), profile or {}, tags)
    if isinstance(event, Event):
        _on_event(ev, event, now_ms)
    elif isinstance(event, TagChange):
        _on_tag(ev, event, now_ms)
    else:
        _on_timer(ev, now_ms)
    return EngineResult(tuple(ev.actions), tuple(ev.suppressed), tuple(ev.held), tuple(sorted(ev.timers)),
                        ev.state(), tuple(ev.matches), ev.evaluations, ev.too_late)


def _on_event(ev: _Eval, event: Event, now_ms: int) -> None:
    if event.event_type in ("consent", "unsubscribe"):
        ev.consent = update_consent(ev.consent, event)
    env = ev.env(_event_env(event))
    rs = ev.rs
    for p in rs.patterns_for_event(event.event_type):
        _keep(ev, ev.patterns, p.id, pattern_step(ev.patterns.get(p.id), event, now_ms, p, env))
    for j in rs.journeys_for_event(event.event_type):
        _keep(ev, ev.journeys, j.id, journey_step(ev.journeys.get(j.id), event, None, j, env))
    ev.fire(rs.rules_for_event(event.event_type), _Trigger(
        f"event:{event.event_id}", event.ts_ms,
        {"type": "event", "event_type": event.event_type, "event_id": event.event_id, "ts_ms": event.ts_ms}),
        env, now_ms)


def _keep(ev: _Eval, states: dict[str, Any], oid: str, result: tuple[Any, tuple[Any, ...], tuple[int, ...]]) -> tuple[Any, ...]:
    """Store a pattern/journey step's new state (None drops it), collect its timers, return its outputs."""
    new, out, timers = result
    old = states.get(oid)
    if new is not None and old is not None and new.too_late > old.too_late:
        ev.too_late += new.too_late - old.too_late
    if new is None:
        states.pop(oid, None)
    else:
        states[oid] = new
    ev.timers.update(timers)
    return out


def _on_tag(ev: _Eval, change: TagChange, now_ms: int) -> None:
    kind = "tag_added" if change.added else "tag_removed"
    env = ev.env({"type": kind, "tag": change.tag, "ts": change.ts_ms})
    if change.added:
        for j in ev.rs.journeys_for_tag(change.tag):
            _keep(ev, ev.journeys, j.id, journey_step(ev.journeys.get(j.id), change, None, j, env))
    trig = _Trigger(f"{kind}:{change.tag}:{change.ts_ms}", change.ts_ms,
                    {"type": kind, "tag": change.tag, "ts_ms": change.ts_ms})
    ev.fire(ev.rs.rules_for_tag(change.tag, change.added), trig, env, now_ms)


def _on_timer(ev: _Eval, now_ms: int) -> None:
    rs = ev.rs
    ev.sends = prune_sends(ev.sends, now_ms, rs.max_window_ms)
    work: list[tuple[int, str, Any]] = [(h.release_ms, h.action.action_id, h) for h in ev.held_state
                                        if h.release_ms <= now_ms]
    for pid, ps in list(ev.patterns.items()):
        matches = _keep(ev, ev.patterns, pid, pattern_step(ps, None, now_ms, rs.patterns[pid]))
        work.extend((m.ts_ms, m.trigger_key, m) for m in matches)
    env = ev.env(None)
    for jid, js in list(ev.journeys.items()):
        sends = _keep(ev, ev.journeys, jid, journey_step(js, None, now_ms, rs.journeys[jid], env))
        work.extend((s.ts_ms, s.trigger_key, s) for s in sends)
    for _, _, item in sorted(work, key=lambda w: (w[0], w[1])):
        if isinstance(item, Held):
            ev.release(item)
        elif isinstance(item, Match):
            ev.on_match(item)
        else:
            ev.on_send(item)
    ev.timers = {t for t in ev.timers if t > now_ms} | {h.release_ms for h in ev.held_state if h.release_ms > now_ms}


def next_due(ruleset: RuleSet, state: PersonState | None) -> int | None:
    """The earliest event time at which ``evaluate(ruleset, state, None, ..., t)`` has work, or None.

    The times ``evaluate`` asks for are where work may be; this is where work IS, from the state itself:
    a pattern's first buffered event or open deadline (plus its lateness), a journey's first buffered
    input or its wait, a held action's release, the oldest send leaving the longest cap window. A caller
    that keeps one timer per person at this time (``operators.person``) fires exactly the timers that
    do something, in the same order, and never accumulates times whose work is gone (a purchase that
    cancelled an idle window, a journey that was never entered)."""
    if state is None:
        return None
    times: list[int] = []
    for pid, ps in state.patterns:
        p = ruleset.patterns.get(pid)
        t = ps.next_due(p) if p is not None else None
        if t is not None:
            times.append(t)
    for jid, js in state.journeys:
        if js.buffer:
            times.append(js.buffer[0].ts_ms)
        if js.active and js.wait_until is not None:
            times.append(js.wait_until)
        j = ruleset.journeys.get(jid)
        if js.active and j is not None and js.version != j.version:
            times.append(js.frontier or 0)  # a new version moves its persons at the next timer
    times.extend(h.release_ms for h in state.held)
    if state.sends:
        times.append(min(s.ts_ms for s in state.sends) + ruleset.max_window_ms)
    return min(times) if times else None


# --------------------------------------------------------------------------------------- state codec


def state_to_json(st: PersonState) -> dict[str, Any]:
    """A JSON-ready value of the state (lists and scalars only), tagged with the codec version."""
    return {
        "v": STATE_CODEC_VERSION, "p": st.person_id,
        "c": [[c.channel, c.granted, c.ts_ms] for c in st.consent],
        "s": [[s.ts_ms, s.rule_id, s.channel, s.firing] for s in st.sends],
        "h": [[h.release_ms, h.action.to_json(), h.firing] for h in st.held],
        "pt": [[pid, ps.version, ps.frontier, [[b.ts_ms, b.rank, b.event_id, list(b.roles), b.key] for b in ps.buffer],
                [list(o) for o in ps.open], [[k, list(ts)] for k, ts in ps.counts], [list(r) for r in ps.runs],
                ps.too_late] for pid, ps in st.patterns],
        "j": [[jid, js.version, js.frontier, [[b.ts_ms, b.input_id, b.input_type, list(b.roles)] for b in js.buffer],
               js.step, js.entry_id, js.entered_ts, js.wait_since, js.wait_until, js.exit_reason, js.exited_ts,
               js.too_late] for jid, js in st.journeys],
    }


def state_from_json(d: Mapping[str, Any]) -> PersonState:
    """Inverse of :func:`state_to_json`; raises ValueError on an unknown codec version."""
    if d.get("v") != STATE_CODEC_VERSION:
        raise ValueError(f"rules person state has codec version {d.get('v')!r}, this code reads "
                         f"{STATE_CODEC_VERSION}; add a decoder for it in operators/rules/engine.py")
    return PersonState(
        d["p"],
        tuple(Consent(ch, g, ts) for ch, g, ts in d["c"]),
        tuple(Send(ts, r, ch, f) for ts, r, ch, f in d["s"]),
        tuple(Held(Action.from_json(a), rel, f) for rel, a, f in d["h"]),
        tuple((pid, PatternState(ver, fr, tuple(Buffered(t, rk, e, tuple(ro), k) for t, rk, e, ro, k in buf),
                                 tuple(tuple(o) for o in op), tuple((k, tuple(ts)) for k, ts in cn),
                                 tuple(tuple(r) for r in rn), late))
              for pid, ver, fr, buf, op, cn, rn, late in d["pt"]),
        tuple((jid, JourneyState(ver, fr, tuple(JourneyInput(t, i, ty, tuple(ro)) for t, i, ty, ro in buf),
                                 step, eid, ets, ws, wu, er, ex, late))
              for jid, ver, fr, buf, step, eid, ets, ws, wu, er, ex, late in d["j"]),
    )
