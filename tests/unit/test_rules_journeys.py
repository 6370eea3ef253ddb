"""Journeys: register → welcome e-mail → no login within 1 day → SMS; exit on purchase (pure)."""

from __future__ import annotations

import itertools
from dataclasses import replace

from operators.rules.journeys import JourneyState, journey_step
from operators.rules.model import Event, Journey, TagChange
from operators.rules.schema import parse_definition
from tests.unit.test_rules_patterns import drive

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
T0 = 1_767_225_600_000

ONBOARDING = {
    "id": "onboarding", "version": 1, "entry": {"event": "register"}, "exit": [{"event": "purchase"}],
    "steps": [
        {"id": "welcome", "send": "welcome_email", "next": "wait_login"},
        {"id": "wait_login", "wait_for": {"event": "login", "within": "1d"}, "on_event": "activated",
         "on_timeout": "nudge"},
        {"id": "nudge", "send": "activation_sms", "next": "done"},
        {"id": "activated", "end": True},
        {"id": "done", "end": True},
    ],
}


def journey(**over) -> Journey:
    j = parse_definition("journey", {**ONBOARDING, **over})
    assert isinstance(j, Journey)
    return j


J = journey()


def ev(eid: str, etype: str, minutes: float) -> Event:
    return Event(eid, etype, T0 + int(minutes * MIN), "p1", {})


def run(arrivals, j: Journey = J, delay_ms: int = 0):
    sends, st = drive(lambda st, e, t: journey_step(st, e, t, j), arrivals, delay_ms)
    return [(s.step_id, s.rule_id, (s.ts_ms - T0) // MIN) for s in sends], st


def test_no_login_within_a_day_gets_the_sms_then_completes():
    sends, st = run([ev("r", "register", 0)])
    assert sends == [("welcome", "welcome_email", 0), ("nudge", "activation_sms", 1440)]
    assert st.step is None and st.exit_reason == "completed" and st.exited_ts == T0 + DAY
    st0, out, timers = journey_step(None, ev("r", "register", 0), None, J)
    assert out == () and timers == (T0,)
    st1, out, timers = journey_step(st0, None, T0, J)
    assert [s.trigger_key for s in out] == ["journey:onboarding:r:welcome"] and timers == (T0 + DAY,)
    assert (st1.step, st1.wait_since, st1.wait_until) == ("wait_login", T0, T0 + DAY)


def test_login_within_the_day_activates_and_no_sms():
    sends, st = run([ev("r", "register", 0), ev("l", "login", 300)])
    assert sends == [("welcome", "welcome_email", 0)] and st.exit_reason == "completed"
    at_deadline, _ = run([ev("r", "register", 0), ev("l", "login", 1440)])
    assert at_deadline == [("welcome", "welcome_email", 0)]  # within is inclusive
    after, _ = run([ev("r", "register", 0), ev("l", "login", 1440.001)])
    assert after[-1] == ("nudge", "activation_sms", 1440)  # negative control


def test_purchase_exits_the_journey_before_the_sms():
    sends, st = run([ev("r", "register", 0), ev("b", "purchase", 600)])
    assert sends == [("welcome", "welcome_email", 0)]
    assert st.exit_reason == "exit:purchase" and st.exited_ts == T0 + 600 * MIN and st.step is None
    # in event time the SMS (day 1) came before a purchase on day 2, even if the purchase arrives first
    sends, st = run([ev("r", "register", 0), ev("b", "purchase", 2880)])
    assert sends[-1] == ("nudge", "activation_sms", 1440) and st.exit_reason == "completed"


def test_order_independent_within_the_watermark_delay():
    arrivals = [ev("r", "register", 0), ev("v", "login", -30), ev("l", "login", 200), ev("b", "purchase", 100)]
    expected = ([("welcome", "welcome_email", 0)], "exit:purchase")
    for perm in itertools.permutations(arrivals):
        sends, st = run(list(perm), delay_ms=6 * HOUR)
        assert (sends, st.exit_reason) == expected, perm


def test_late_login_negative_control_and_too_late_count():
    # The login (t=300 min) comes after a purchase at 2 days moved the watermark past the deadline.
    arrivals = [ev("r", "register", 0), ev("x", "purchase", 2880), ev("l", "login", 300)]
    sends, st = run(arrivals, delay_ms=0)
    assert sends[-1] == ("nudge", "activation_sms", 1440) and st.too_late == 1
    sends, st = run(arrivals, delay_ms=3 * DAY)
    assert sends == [("welcome", "welcome_email", 0)] and st.too_late == 0


def test_no_reentry_by_default_reentry_when_allowed():
    again = [ev("r1", "register", 0), ev("l", "login", 10), ev("r2", "register", 3000)]
    sends, st = run(again)
    assert sends == [("welcome", "welcome_email", 0)] and st.entry_id == "r1"
    sends, st = run(again, journey(reentry=True))
    assert sends[:2] == [("welcome", "welcome_email", 0), ("welcome", "welcome_email", 3000)]
    assert st.entry_id == "r2"


def test_paused_journey_admits_nobody_but_persons_inside_continue():
    paused = replace(J, paused=True)
    assert journey_step(None, ev("r", "register", 0), None, paused) == (None, (), ())
    st, _, _ = journey_step(None, ev("r", "register", 0), None, J)
    st, sends, _ = journey_step(st, None, T0, J)
    st, sends, _ = journey_step(st, None, T0 + DAY, paused)
    assert [s.rule_id for s in sends] == ["activation_sms"]


def test_new_version_keeps_existing_steps_and_exits_removed_ones():
    st, _, _ = journey_step(None, ev("r", "register", 0), None, J)
    st, _, _ = journey_step(st, None, T0, J)
    v2 = journey(version=2, steps=[s if s["id"] != "nudge" else {"id": "nudge", "send": "activation_push",
                                                                 "next": "done"} for s in ONBOARDING["steps"]])
    st2, sends, _ = journey_step(st, None, T0 + DAY, v2)
    assert [s.rule_id for s in sends] == ["activation_push"] and st2.version == 2
    v3 = journey(version=3, steps=[{"id": "welcome", "send": "welcome_email", "next": "done"},
                                   {"id": "done", "end": True}])
    st3, sends, _ = journey_step(st, None, T0 + HOUR, v3)
    assert sends == () and st3.exit_reason == "version_changed" and st3.step is None


def test_tag_entry_plain_wait_and_irrelevant_inputs():
    j = parse_definition("journey", {"id": "vip", "version": 1, "entry": {"tag_added": "high_value"},
                                     "steps": [{"id": "pause", "wait": "2h", "next": "hello"},
                                               {"id": "hello", "send": "vip_hello", "next": "end"},
                                               {"id": "end", "end": True}]})
    tag = TagChange("p1", "high_value", True, T0)
    sends, _ = drive(lambda s, e, t: journey_step(s, e, t, j), [tag], 0)
    assert [(x.rule_id, x.ts_ms - T0, x.entry_id) for x in sends] == [("vip_hello", 2 * HOUR, f"tag+high_value@{T0}")]
    assert journey_step(None, TagChange("p1", "high_value", False, T0), None, j) == (None, (), ())
    assert journey_step(None, ev("v", "page_view", 0), None, J) == (None, (), ())
    assert journey_step(JourneyState(1), None, None, J) == (JourneyState(1), (), ())
