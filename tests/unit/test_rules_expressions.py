"""Conditions and filters in the expression language, and the seed's cases from config/rules.yaml (pure)."""

from __future__ import annotations

import textwrap

import pytest

from operators.rules.engine import evaluate
from operators.rules.guards import budget_step
from operators.rules.model import Event, TagChange
from operators.rules.registry import RuleSet, apply_control
from operators.rules.schema import DefinitionError, load_file, load_text
from tests.helpers import ROOT
from tests.unit.test_rules_engine import Person

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
T0 = 1_767_261_600_000  # 2026-01-01T10:00Z = 18:00 in Shanghai
SHIPPED = ROOT / "config" / "rules.yaml"


def shipped() -> RuleSet:
    return RuleSet.from_definitions(load_file(SHIPPED))


def ev(eid: str, etype: str, ts: int, **props) -> Event:
    return Event(eid, etype, ts, "p1", props)


def test_shipped_rules_file_is_valid_and_complete():
    d = load_file(SHIPPED)
    assert [r.id for r in d.rules] == [
        "vip_idle_coupon", "churn_risk_survey", "welcome_register", "onboarding_welcome_email",
        "onboarding_activation_sms", "cart_abandon_reminder", "item_interest_offer", "register_no_login_reminder"]
    assert [p.id for p in d.patterns] == ["cart_abandon", "item_views_3_in_1h", "register_no_login_7d",
                                          "purchase_idle_30d"]
    assert [j.id for j in d.journeys] == ["onboarding"]
    assert d.rules[0].condition.names == frozenset({"tags"})


def test_seed_vip_coupon_for_high_value_customer_idle_30_days():
    vip = Person(shipped(), tags=frozenset({"high_value"}))
    vip.send(ev("b1", "purchase", T0))
    vip.advance(T0 + 30 * DAY - 1)
    assert [a for a in vip.actions() if a[0] == "vip_idle_coupon"] == []
    vip.advance(T0 + 30 * DAY)  # 18:00 Shanghai: outside quiet hours
    acts = [a for r in vip.log for a in r.actions if a.rule_id == "vip_idle_coupon"]
    assert [(a.channel, a.template, a.ts_ms - T0, a.budget_max) for a in acts] == [
        ("coupon", "vip_20_off", 30 * DAY, 10000), ("push", "vip_coupon_notice", 30 * DAY, 10000)]
    assert acts[0].params == {"coupon": "VIP专属8折券", "discount_pct": 20, "valid_days": 14}
    _, granted, denied = budget_step(None, acts)
    assert len(granted) == 2 and denied == ()
    plain = Person(shipped(), tags=frozenset())  # negative control: not high value
    plain.send(ev("b1", "purchase", T0))
    plain.advance(T0 + 31 * DAY)
    assert [a for a in plain.actions() if a[0] == "vip_idle_coupon"] == []
    again = Person(shipped(), tags=frozenset({"high_value"}))  # bought again on day 10: idle from then
    again.send(ev("b1", "purchase", T0))
    again.send(ev("b2", "purchase", T0 + 10 * DAY))
    again.advance(T0 + 45 * DAY)
    assert sorted({a[2] - T0 for a in again.actions() if a[0] == "vip_idle_coupon"}) == [40 * DAY]


def test_seed_churn_risk_survey_and_welcome_on_register():
    p = Person(shipped(), profile={"timezone": "Asia/Shanghai"})
    r = p.send(TagChange("p1", "churn_risk", True, T0 - 2 * HOUR))  # 16:00 local
    assert [(a.rule_id, a.channel, a.params) for a in r.actions] == [
        ("churn_risk_survey", "email", {"question": "您最近为什么没有购买?"})]
    r = p.send(ev("r1", "register", T0))
    assert [(a.rule_id, a.channel) for a in r.actions] == [("welcome_register", "push")]
    p.advance(T0)
    assert p.actions()[-1] == ("onboarding_welcome_email", "email", T0)


def test_seed_three_views_of_one_item_get_a_price_offer():
    p = Person(shipped())
    for i, m in enumerate((0, 20, 40)):
        p.send(ev(f"v{i}", "page_view", T0 + m * MIN, item_id="sku-9"))
    p.send(ev("w", "page_view", T0 + 41 * MIN))  # no item: the pattern's where filter skips it
    p.advance(T0 + 40 * MIN)
    offer = [a for r in p.log for a in r.actions if a.rule_id == "item_interest_offer"]
    assert [(a.channel, a.trigger["key"], a.trigger["event_id"], a.ts_ms - T0) for a in offer] == [
        ("coupon", "sku-9", "v2", 40 * MIN)]


def test_seed_register_without_login_for_7_days():
    p = Person(shipped())
    p.send(ev("c", "consent", T0 - DAY, channel="sms", granted=True))
    p.send(ev("r1", "register", T0 - 8 * HOUR))  # 10:00 local, so day 7 is 10:00 too
    p.advance(T0 + 7 * DAY)
    assert ("register_no_login_reminder", "sms", T0 - 8 * HOUR + 7 * DAY) in p.actions()
    q = Person(shipped())
    q.send(ev("r1", "register", T0 - 8 * HOUR))
    q.send(ev("l1", "login", T0))
    q.advance(T0 + 8 * DAY)
    assert [a for a in q.actions() if a[0] == "register_no_login_reminder"] == []


RULES = textwrap.dedent("""\
    patterns:
      - id: big_cart
        version: 1
        type: absence
        start: {event: add_to_cart, where: "event.props.price >= 100"}
        cancel: {event: purchase}
        within: 30m
    journeys:
      - id: j
        version: 1
        entry: {event: register}
        steps:
          - {id: b, branch: [{if: "profile.gmv_90d >= 1000", next: vip}], else: std}
          - {id: vip, send: vip_hi, next: end}
          - {id: std, send: std_hi, next: end}
          - {id: end, end: true}
    rules:
      - id: winback
        version: 1
        trigger: {event: [login]}
        condition: days_since(profile.last_purchase) >= 30 and 'high_value' in tags
        actions: [{channel: coupon, template: vip}]
      - {id: big_cart_push, version: 1, trigger: {pattern: big_cart}, actions: [{channel: push, template: c}]}
      - {id: vip_hi, version: 1, trigger: {journey: j}, actions: [{channel: push, template: v}]}
      - {id: std_hi, version: 1, trigger: {journey: j}, actions: [{channel: push, template: s}]}
    """)


def test_conditions_use_profile_tags_and_the_evaluation_time():
    rs = RuleSet.from_definitions(load_text(RULES))
    profile = {"last_purchase": T0 - 30 * DAY}
    hit = evaluate(rs, None, ev("l", "login", T0), profile, {"high_value"}, T0)
    assert [a.rule_id for a in hit.actions] == ["winback"] and hit.rule_evaluations == 1
    assert evaluate(rs, None, ev("l", "login", T0), profile, {"high_value"}, T0 - 1).actions == ()
    assert evaluate(rs, None, ev("l", "login", T0), profile, set(), T0).actions == ()
    assert evaluate(rs, None, ev("l", "login", T0), {}, {"high_value"}, T0).actions == ()  # null is false


def test_tag_prefilter_skips_the_condition_but_never_changes_the_result():
    rs = RuleSet.from_definitions(load_text(RULES))
    assert rs.rules["winback"].required_tags == {"high_value"}
    profile = {"last_purchase": T0 - 40 * DAY}
    without = evaluate(rs, None, ev("l", "login", T0), profile, {"other"}, T0)
    assert without.actions == () and without.rule_evaluations == 0  # skipped, not evaluated
    with_tag = evaluate(rs, None, ev("l", "login", T0), profile, {"high_value"}, T0)
    assert [a.rule_id for a in with_tag.actions] == ["winback"] and with_tag.rule_evaluations == 1
    # the prefilter agrees with the expression itself on every tag set
    cond = rs.rules["winback"].condition
    env = {"profile": profile, "event": {"type": "login"}}
    for tags in (set(), {"other"}, {"high_value"}, {"high_value", "other"}):
        true = cond.evaluate({**env, "tags": frozenset(tags)}, T0) is True
        assert not true or rs.rules["winback"].required_tags <= tags  # true only with the tags


def test_where_filters_and_branches():
    rs = RuleSet.from_definitions(load_text(RULES))
    cheap, dear = Person(rs), Person(rs)
    cheap.send(ev("c", "add_to_cart", T0, price=20))
    dear.send(ev("c", "add_to_cart", T0, price=150))
    cheap.advance(T0 + HOUR)
    dear.advance(T0 + HOUR)
    assert cheap.actions() == [] and dear.actions() == [("big_cart_push", "push", T0 + 30 * MIN)]
    rich, poor = Person(rs, profile={"gmv_90d": 5000}), Person(rs, profile={"gmv_90d": 10})
    for p in (rich, poor):
        p.send(ev("r", "register", T0))
        p.advance(T0)
    assert rich.actions() == [("vip_hi", "push", T0)] and poor.actions() == [("std_hi", "push", T0)]


def test_expression_errors_point_into_the_yaml_file():
    text = textwrap.dedent("""\
        rules:
          - id: r1
            version: 1
            trigger: {event: [register]}
            condition: profile.gmv_90d >= 1000 and and
            actions: [{channel: push, template: hi}]
          - id: r2
            version: 1
            trigger: {event: [register]}
            condition: "'vip' in tags or bogus_fn(1)"
            actions: [{channel: push, template: hi}]
          - id: r3
            version: 1
            trigger: {event: [register]}
            condition: |
              'vip' in tags
                and profile.x >= = 3
            actions: [{channel: push, template: hi}]
        """)
    with pytest.raises(DefinitionError) as e:
        load_text(text, "rules.yaml")
    got = [(p.line, p.column, p.obj, p.path, p.message.split(":")[0]) for p in e.value.problems]
    assert got == [(5, 44, "rule 'r1'", "$.rules[0].condition", "expression error"),
                   (10, 34, "rule 'r2'", "$.rules[1].condition", "expression error"),
                   (17, 26, "rule 'r3'", "$.rules[2].condition", "expression error")]
    lines = text.split("\n")
    assert lines[4][43:46] == "and" and lines[9][33:41] == "bogus_fn" and lines[16][25] == "="
    assert "unknown function 'bogus_fn'" in str(e.value.problems[1])


def test_unknown_names_are_errors_with_a_suggestion():
    text = "rules:\n  - {id: r, version: 1, trigger: {event: [x]}, condition: \"'vip' in tag\", actions: [{channel: push, template: t}]}\n"
    with pytest.raises(DefinitionError) as e:
        load_text(text, "typo.yaml")
    assert str(e.value) == ("typo.yaml:2:69: rule 'r' at $.rules[0].condition: expression error: unknown name 'tag'; "
                            "did you mean 'tags'?; fix the expression")
    assert text.split("\n")[1][68:71] == "tag"


def test_control_upsert_with_a_broken_expression_keeps_the_old_version():
    rs = RuleSet.from_definitions(load_text(RULES))
    msg = {"kind": "rule", "op": "upsert", "id": "winback", "version": 2, "definition": {
        "id": "winback", "version": 2, "trigger": {"event": ["login"]}, "condition": "tags contains",
        "actions": [{"channel": "coupon", "template": "vip"}]}}
    same, res = apply_control(rs, msg)
    assert same is rs and not res.ok
    assert res.reason.startswith("broken definition, version 1 keeps running: <control rule winback v2>:1:")
    assert same.rules["winback"].version == 1


def test_rule_set_and_state_survive_pickling():
    import pickle

    rs = shipped()
    rs2 = pickle.loads(pickle.dumps(rs))
    vip = Person(rs2, tags=frozenset({"high_value"}))
    vip.send(ev("b1", "purchase", T0))
    vip.advance(T0 + 30 * DAY)
    assert [a[:2] for a in vip.actions() if a[0] == "vip_idle_coupon"] == [("vip_idle_coupon", "coupon"),
                                                                          ("vip_idle_coupon", "push")]
    assert pickle.loads(pickle.dumps(vip.state)) == vip.state
    assert rs2.rules_for_pattern("purchase_idle_30d")[0].condition.text == "'high_value' in tags"
