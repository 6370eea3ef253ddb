"""Guard rails one by one, each with a negative control (pure; no expressions needed)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from operators.messages import Action
from operators.rules.guards import (
    BudgetState,
    Consent,
    Send,
    budget_step,
    consent_allows,
    frequency_block,
    person_zone,
    prune_sends,
    quiet_release_ms,
    select_by_group,
    update_consent,
)
from operators.rules.model import Constraints, Event, FrequencyCap, Policy, QuietHours, Rule, Trigger

HOUR, DAY = 3_600_000, 86_400_000


def utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M")


def rule(rid: str = "r1", priority: int = 0, group: str | None = None, **cons) -> Rule:
    return Rule(rid, 1, rid, False, priority, group, None, Trigger("event", ("x",)), None, None, (),
                Constraints(**cons))


POLICY = Policy("Asia/Shanghai", (
    FrequencyCap("channel:sms:1d", 1, DAY, ("sms",)),
    FrequencyCap("all_messages", 3, 7 * DAY, ("email", "sms", "push")),
))


# ---------------------------------------------------------------------------------- groups / priority


def test_group_highest_priority_acts_ties_by_id_and_ungrouped_always_act():
    a, b, c = rule("b_rule", 5, "g"), rule("a_rule", 5, "g"), rule("c_rule", 9, "g")
    lone = rule("lone", 1)
    acting, excluded = select_by_group([a, lone, b, c])
    assert [r.id for r in acting] == ["c_rule", "lone"]
    assert [(r.id, w.id) for r, w in excluded] == [("a_rule", "c_rule"), ("b_rule", "c_rule")]
    acting, excluded = select_by_group([a, b])  # tie on priority: the smaller id wins
    assert [r.id for r in acting] == ["a_rule"] and [r.id for r, _ in excluded] == ["b_rule"]


def test_group_negative_control_other_groups_do_not_exclude():
    acting, excluded = select_by_group([rule("x", 1, "g1"), rule("y", 9, "g2"), rule("z", 5)])
    assert [r.id for r in acting] == ["y", "z", "x"] and excluded == []


# ------------------------------------------------------------------------------------------- consent


def consent_event(ts: int, etype: str = "consent", **props) -> Event:
    return Event(f"c{ts}", etype, ts, "p1", props)


def test_consent_opt_in_needs_a_grant_opt_out_needs_a_revocation():
    r = rule()
    assert consent_allows((), "sms", POLICY, r) == (False, "sms:no_opt_in")
    assert consent_allows((), "email", POLICY, r) == (True, "email:opted_out")
    assert consent_allows((), "coupon", POLICY, r) == (True, "")
    granted = update_consent((), consent_event(10, channel="sms", granted=True))
    assert granted == (Consent("sms", True, 10),)
    assert consent_allows(granted, "sms", POLICY, r)[0] is True
    unsub = update_consent(granted, consent_event(20, "unsubscribe", channel="email"))
    assert consent_allows(unsub, "email", POLICY, r) == (False, "email:opted_out")
    assert consent_allows(unsub, "sms", POLICY, r)[0] is True  # negative control: sms untouched


def test_consent_latest_event_time_wins_out_of_order_and_revocation_wins_ties():
    newer_unsub = update_consent((), consent_event(200, "unsubscribe", channel="sms"))
    late_grant = update_consent(newer_unsub, consent_event(100, channel="sms", granted=True))
    assert late_grant == (Consent("sms", False, 200),)
    tie = update_consent(update_consent((), consent_event(300, channel="sms", granted=False)),
                         consent_event(300, channel="sms", status="opt_in"))
    assert tie == (Consent("sms", False, 300),)
    later_grant = update_consent(newer_unsub, consent_event(201, channel="sms", status="opt_in"))
    assert later_grant == (Consent("sms", True, 201),)  # negative control: a newer grant does win


def test_unsubscribe_without_channel_revokes_every_channel_and_rule_overrides():
    st = update_consent((), consent_event(5, "unsubscribe"))
    assert [c.channel for c in st if not c.granted] == ["coupon", "email", "push", "sms", "webhook"]
    r = rule(consent_required=True)
    assert consent_allows((), "email", POLICY, r) == (False, "email:no_opt_in")
    other = rule(consent_channel="sms")
    granted = update_consent((), consent_event(1, channel="sms", granted="yes"))
    assert consent_allows((), "coupon", POLICY, other) == (False, "sms:no_opt_in")
    assert consent_allows(granted, "coupon", POLICY, other) == (True, "sms:opted_out")


# --------------------------------------------------------------------------------------- quiet hours

NIGHT = QuietHours(22 * 60, 8 * 60, None, "hold")


def test_quiet_hours_outside_and_plain_window():
    assert quiet_release_ms(NIGHT, "Asia/Shanghai", utc_ms("2026-06-01T04:00")) is None  # 12:00 local
    assert quiet_release_ms(NIGHT, "Asia/Shanghai", utc_ms("2026-06-01T00:00")) is None  # 08:00 local: open
    lunch = QuietHours(12 * 60, 14 * 60, None, "drop")
    assert iso(quiet_release_ms(lunch, "Asia/Shanghai", utc_ms("2026-06-01T04:30"))) == "2026-06-01T06:00"


def test_quiet_hours_shanghai_wraps_midnight_and_follows_1991_dst():
    # 23:00 CST → 08:00 CST next day = 00:00 UTC
    assert iso(quiet_release_ms(NIGHT, "Asia/Shanghai", utc_ms("2026-06-01T15:00"))) == "2026-06-02T00:00"
    # 07:59 local (23:59 UTC) is inside; 08:00 local is the release
    assert iso(quiet_release_ms(NIGHT, "Asia/Shanghai", utc_ms("2026-06-01T23:59"))) == "2026-06-02T00:00"
    # China observed DST in 1991 (14 Apr 02:00 → 03:00): 08:00 CDT (+9) is 23:00 UTC, not 00:00
    got = quiet_release_ms(NIGHT, "Asia/Shanghai", utc_ms("1991-04-13T15:00"))
    assert iso(got) == "1991-04-13T23:00"
    naive_fixed_offset = utc_ms("1991-04-14T00:00")  # what a fixed +08:00 would say
    assert got != naive_fixed_offset
    # and back on 15 Sep 1991: 08:00 CST is 00:00 UTC again
    assert iso(quiet_release_ms(NIGHT, "Asia/Shanghai", utc_ms("1991-09-14T15:00"))) == "1991-09-15T00:00"


def test_quiet_hours_new_york_spring_forward_and_fall_back():
    # 7 Mar 2026 22:00 EST = 8 Mar 03:00 UTC; clocks jump at 02:00; 08:00 EDT = 12:00 UTC
    got = quiet_release_ms(NIGHT, "America/New_York", utc_ms("2026-03-08T03:00"))
    assert iso(got) == "2026-03-08T12:00"
    assert got != utc_ms("2026-03-08T13:00")  # negative control: the winter offset would be an hour late
    # 31 Oct 23:00 EDT = 1 Nov 03:00 UTC; fall back at 02:00; 08:00 EST = 13:00 UTC
    assert iso(quiet_release_ms(NIGHT, "America/New_York", utc_ms("2026-11-01T03:00"))) == "2026-11-01T13:00"


def test_quiet_hours_end_in_dst_gap_and_in_repeated_hour():
    gap_end = QuietHours(22 * 60, 2 * 60 + 30, None, "hold")  # 02:30 does not exist on 8 Mar 2026
    assert iso(quiet_release_ms(gap_end, "America/New_York", utc_ms("2026-03-08T04:00"))) == "2026-03-08T07:30"
    short = QuietHours(30, 105, None, "hold")  # 00:30-01:45, and 01:xx happens twice on 1 Nov 2026
    first_pass = utc_ms("2026-11-01T05:30")  # 01:30 EDT
    second_pass = utc_ms("2026-11-01T06:30")  # 01:30 EST
    assert iso(quiet_release_ms(short, "America/New_York", first_pass)) == "2026-11-01T05:45"
    assert iso(quiet_release_ms(short, "America/New_York", second_pass)) == "2026-11-01T06:45"


def test_person_zone_order_profile_then_rule_then_policy():
    assert person_zone({"timezone": "America/New_York"}, "Europe/Berlin", POLICY) == "America/New_York"
    assert person_zone({"timezone": "Mars/Olympus"}, "Europe/Berlin", POLICY) == "Europe/Berlin"
    assert person_zone({}, None, POLICY) == "Asia/Shanghai"


# ----------------------------------------------------------------------------------------- frequency


def test_rule_cap_counts_only_that_rules_sends():
    r = rule("r1", frequency=(FrequencyCap("rule:30d", 1, 30 * DAY),))
    sent = (Send(0, "r1", "coupon", "f1"),)
    assert frequency_block(sent, r, "coupon", POLICY, 29 * DAY, "f2") == "rule:30d (1 per 43200 min)"
    assert frequency_block(sent, r, "coupon", POLICY, 30 * DAY, "f2") is None  # a window later: allowed
    other = (Send(0, "r2", "coupon", "f1"),)
    assert frequency_block(other, r, "coupon", POLICY, DAY, "f2") is None  # negative control
    # the second action of the same firing (coupon + push notice) is not capped by the first
    assert frequency_block(sent, r, "push", POLICY, 0, "f1") is None
    two_actions = (Send(0, "r1", "coupon", "f1"), Send(0, "r1", "push", "f1"))
    r2 = rule("r1", frequency=(FrequencyCap("rule:30d", 2, 30 * DAY),))
    assert frequency_block(two_actions, r2, "coupon", POLICY, DAY, "f2") is None  # one firing, not two


def test_policy_caps_per_channel_and_across_all_messages():
    r = rule()
    assert frequency_block((Send(0, "a", "sms"),), r, "sms", POLICY, 23 * HOUR) == "channel:sms:1d (1 per 1440 min)"
    assert frequency_block((Send(0, "a", "sms"),), r, "email", POLICY, HOUR) is None  # other channel
    week = (Send(0, "a", "email"), Send(DAY, "b", "push"), Send(2 * DAY, "c", "sms"))
    assert frequency_block(week, r, "push", POLICY, 3 * DAY) == "all_messages (3 per 10080 min)"
    assert frequency_block(week, r, "push", POLICY, 7 * DAY) is None  # the first send left the window
    coupons = tuple(Send(i, "a", "coupon") for i in range(10))
    assert frequency_block(coupons, r, "push", POLICY, 20) is None  # coupons are not messages


def test_frequency_out_of_order_counts_later_sends_too():
    r = rule()
    later = (Send(10 * HOUR, "a", "sms"),)
    assert frequency_block(later, r, "sms", POLICY, 2 * HOUR) == "channel:sms:1d (1 per 1440 min)"
    assert prune_sends((Send(0, "a", "sms"), Send(5 * DAY, "a", "sms")), 8 * DAY, 7 * DAY) == (Send(5 * DAY, "a", "sms"),)


# -------------------------------------------------------------------------------------------- budget


def budget_action(i: int, campaign: str = "vip", budget_max: int | None = 3) -> Action:
    return Action(f"a{i}", "r", 1, f"p{i}", "coupon", "t", {}, campaign, {}, i, 0, budget_max)


def test_budget_step_grants_exactly_max_across_batches():
    st, granted, denied = budget_step(None, [budget_action(i) for i in range(2)])
    assert st == BudgetState("vip", 2) and [a.action_id for a in granted] == ["a0", "a1"] and denied == ()
    st, granted, denied = budget_step(st, [budget_action(i) for i in range(2, 5)])
    assert st == BudgetState("vip", 3)
    assert [a.action_id for a in granted] == ["a2"] and [a.action_id for a in denied] == ["a3", "a4"]
    assert budget_step(st, []) == (st, (), ())


def test_budget_negative_control_per_subtask_state_overspends():
    requests = [budget_action(i) for i in range(6)]
    # what a budget kept per parallel subtask (keyed by person) would do: each half sees its own count
    naive = sum(len(budget_step(None, half)[1]) for half in (requests[::2], requests[1::2]))
    assert naive == 6
    # keyed by campaign: one sequential state, exactly the max
    assert len(budget_step(None, requests)[1]) == 3


def test_budget_step_refuses_a_foreign_campaign():
    with pytest.raises(ValueError, match="key the budget step by Action.campaign"):
        budget_step(BudgetState("vip"), [budget_action(1, "other")])
    assert budget_step(None, [replace(budget_action(1), budget_max=0)])[2][0].action_id == "a1"
