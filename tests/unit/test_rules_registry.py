"""RuleSet indexes and control messages: upsert, stale, broken, pause/resume, delete (pure)."""

from __future__ import annotations

import textwrap

from operators.rules.registry import Cleanup, ControlResult, RuleSet, apply_control
from operators.rules.schema import load_text

#: A cart-abandonment pattern and the head of an onboarding journey (its steps follow), shared
#: with test_rules_engine.
CART_AND_ONBOARDING = textwrap.dedent("""\
    patterns:
      - {id: cart_abandon, version: 1, type: absence, start: {event: add_to_cart}, cancel: {event: purchase}, within: 30m}
    journeys:
      - id: onboarding
        version: 1
        entry: {event: register}
        exit: [{event: purchase}]
    """)

BASE = CART_AND_ONBOARDING + textwrap.dedent("""\
        steps: [{id: hi, send: welcome_email, next: end}, {id: end, end: true}]
    rules:
      - {id: welcome_email, version: 1, trigger: {journey: onboarding}, actions: [{channel: email, template: w}]}
      - {id: low, version: 1, priority: 1, trigger: {event: [register, login]}, actions: [{channel: push, template: a}]}
      - {id: high, version: 3, priority: 9, trigger: {event: [register]}, actions: [{channel: push, template: b}]}
      - {id: dormant, version: 1, paused: true, trigger: {event: [register]}, actions: [{channel: push, template: c}]}
      - {id: vip_in, version: 1, trigger: {tag_added: vip}, actions: [{channel: email, template: d}]}
      - {id: vip_out, version: 1, trigger: {tag_removed: vip}, actions: [{channel: email, template: e}]}
      - {id: cart, version: 2, trigger: {pattern: cart_abandon}, actions: [{channel: push, template: f}]}
    """)


def base() -> RuleSet:
    return RuleSet.from_definitions(load_text(BASE, "base.yaml"))


def ids(rules) -> list[str]:
    return [r.id for r in rules]


def rule_msg(rid: str, version: int, op: str = "upsert", **definition) -> dict:
    d = {"id": rid, "version": version, "trigger": {"event": ["login"]},
         "actions": [{"channel": "push", "template": "t"}], **definition}
    msg = {"kind": "rule", "op": op, "id": rid, "version": version}
    if op == "upsert":
        msg["definition"] = d
    return msg


def test_trigger_indexes_only_hold_matching_active_rules():
    rs = base()
    assert ids(rs.rules_for_event("register")) == ["high", "low"]  # priority order; paused 'dormant' left out
    assert ids(rs.rules_for_event("login")) == ["low"]
    assert rs.rules_for_event("page_view") == ()
    assert ids(rs.rules_for_tag("vip", True)) == ["vip_in"] and ids(rs.rules_for_tag("vip", False)) == ["vip_out"]
    assert ids(rs.rules_for_pattern("cart_abandon")) == ["cart"]
    assert [p.id for p in rs.patterns_for_event("purchase")] == ["cart_abandon"]
    assert [j.id for j in rs.journeys_for_event("purchase")] == ["onboarding"]
    assert rs.journeys_for_event("add_to_cart") == ()
    assert "welcome_email" not in ids(r for t in ("register", "login") for r in rs.rules_for_event(t))
    assert rs.max_window_ms == 0 and rs.version == 1
    assert rs.event_types == {"register", "login", "add_to_cart", "purchase", "consent", "unsubscribe"}


def test_upsert_new_version_replay_and_stale():
    rs = base()
    rs2, res = apply_control(rs, rule_msg("low", 2, priority=20))
    assert res == ControlResult(True, "rule", "upsert", "low", 2, 2)
    assert ids(rs2.rules_for_event("login")) == ["low"] and rs2.rules["low"].priority == 20
    assert ids(rs2.rules_for_event("register")) == ["high"]  # the new version no longer triggers on register
    assert ids(rs.rules_for_event("register")) == ["high", "low"]  # the old set is untouched (immutable)
    same, res = apply_control(rs2, rule_msg("low", 2, priority=20))
    assert same is rs2 and res.ok and res.reason == "already at version 2 (replayed message)"
    same, res = apply_control(rs2, rule_msg("low", 2, priority=21))
    assert same is rs2 and not res.ok
    assert res.reason == "stale version 2: rule 'low' runs version 2; publish with version 3 or higher"
    same, res = apply_control(rs2, rule_msg("low", 1))
    assert not res.ok and res.reason.startswith("stale version 1: rule 'low' runs version 2")
    assert res.to_json() == {"ok": False, "kind": "rule", "op": "upsert", "id": "low", "version": 1,
                             "ruleset_version": 2, "reason": res.reason, "cleanup": None}


def test_broken_definition_is_rejected_and_the_old_version_keeps_running():
    rs = base()
    bad = rule_msg("low", 2, actions=[{"channel": "fax", "template": "t"}])
    same, res = apply_control(rs, bad)
    assert same is rs and not res.ok
    assert res.reason == ("broken definition, version 1 keeps running: <control rule low v2>: rule 'low' at "
                          "$.actions[0].channel: 'fax' is not allowed; use one of email, sms, push, webhook, coupon")
    assert ids(same.rules_for_event("login")) == ["low"] and same.rules["low"].version == 1
    dangling = rule_msg("new", 1, trigger={"pattern": "missing"})
    same, res = apply_control(rs, dangling)
    assert same is rs and res.reason == ("rule 'new': triggers on pattern 'missing', which does not exist; "
                                         "define the pattern first or fix the id")
    same, res = apply_control(rs, {**rule_msg("x", 1), "version": 2})
    assert res.reason == "definition.version 1 differs from the message version 2; make them equal"
    same, res = apply_control(rs, {**rule_msg("x", 1), "id": "y"})
    assert res.reason == "definition.id 'x' differs from the message id 'y'; make them equal"
    # changing a journey's rule to another trigger would orphan the journey step
    same, res = apply_control(rs, rule_msg("welcome_email", 2))
    assert not res.ok and "whose trigger is not {journey: onboarding}" in res.reason


def test_pause_resume_and_versions_of_them():
    rs = base()
    rs2, res = apply_control(rs, rule_msg("high", 3, "pause"))
    assert res.ok and ids(rs2.rules_for_event("register")) == ["low"] and rs2.rules["high"].paused
    rs3, res = apply_control(rs2, {"kind": "rule", "op": "resume", "id": "high"})
    assert res.ok and ids(rs3.rules_for_event("register")) == ["high", "low"] and rs3.version == 3
    same, res = apply_control(rs3, rule_msg("high", 2, "pause"))
    assert same is rs3 and res.reason == ("stale version 2: rule 'high' runs version 3; pause names the running "
                                          "version (or leave version out)")
    same, res = apply_control(rs3, rule_msg("high", 4, "pause"))
    assert res.reason.startswith("unknown version 4")
    same, res = apply_control(rs3, {"kind": "rule", "op": "resume", "id": "high"})
    assert same is rs3 and res.ok and res.reason == "already running"
    rs4, res = apply_control(rs, {"kind": "pattern", "op": "pause", "id": "cart_abandon"})
    assert res.ok and rs4.patterns_for_event("add_to_cart") == ()


def test_delete_reports_cleanup_and_blocks_stale_recreation():
    rs = base()
    rs2, res = apply_control(rs, {"kind": "rule", "op": "delete", "id": "cart"})
    assert res.ok and res.cleanup == Cleanup(("held:cart",), "held-action releases of the rule")
    assert "cart" not in rs2.rules and rs2.rules_for_pattern("cart_abandon") == ()
    same, res = apply_control(rs2, rule_msg("cart", 2, trigger={"pattern": "cart_abandon"}))
    assert same is rs2 and not res.ok and res.reason == ("stale version 2: rule 'cart' was deleted at version 2; publish with "
                                         "version 3 or higher")
    rs3, res = apply_control(rs2, rule_msg("cart", 3, trigger={"pattern": "cart_abandon"}))
    assert res.ok and ids(rs3.rules_for_pattern("cart_abandon")) == ["cart"]
    _, res = apply_control(rs2, {"kind": "rule", "op": "delete", "id": "cart"})
    assert res.reason == "rule 'cart' does not exist (deleted at version 2); check the id with `zhongtai rules list`"


def test_delete_refuses_dangling_dependants_then_succeeds():
    rs = base()
    same, res = apply_control(rs, {"kind": "pattern", "op": "delete", "id": "cart_abandon"})
    assert same is rs and res.reason == ("cannot delete pattern 'cart_abandon': triggers on pattern 'cart_abandon', "
                                         "which does not exist; define the pattern first or fix the id (delete or "
                                         "change the dependants first)")
    rs2, _ = apply_control(rs, {"kind": "rule", "op": "delete", "id": "cart"})
    rs3, res = apply_control(rs2, {"kind": "pattern", "op": "delete", "id": "cart_abandon"})
    assert res.ok and res.cleanup.to_json() == {"state": ["pattern:cart_abandon"],
                                                 "timers": "the pattern's event and deadline timers"}
    assert rs3.patterns_for_event("add_to_cart") == ()


def test_malformed_messages_are_answered_not_raised():
    rs = base()
    cases = {
        "not json": "control message is a str, not a JSON object; send {kind, op, id, version, definition}",
        None: "control message is a NoneType, not a JSON object; send {kind, op, id, version, definition}",
    }
    for msg, reason in cases.items():
        assert apply_control(rs, msg) == (rs, ControlResult(False, None, None, None, None, 1, reason))
    assert apply_control(rs, {"kind": "tag", "op": "upsert", "id": "x"})[1].reason == (
        "kind 'tag' is not one of rule, pattern, journey, policy, batch")
    assert apply_control(rs, {"kind": "rule", "op": "drop", "id": "x"})[1].reason == (
        "op 'drop' is not one of upsert, pause, resume, delete")
    assert apply_control(rs, {"kind": "rule", "op": "pause"})[1].reason == (
        "id is missing or not a string; give the id of the rule")
    assert apply_control(rs, {"kind": "rule", "op": "pause", "id": "low", "version": "2"})[1].reason == (
        "version '2' is not a positive integer")
    assert apply_control(rs, {"kind": "rule", "op": "upsert", "id": "low"})[1].reason == (
        "upsert needs a definition object")


def test_journey_and_pattern_upserts():
    rs = base()
    pat = {"id": "views", "version": 1, "type": "count", "event": {"event": "page_view"}, "count": 3, "within": "1h",
           "by": "props.item_id"}
    rs2, res = apply_control(rs, {"kind": "pattern", "op": "upsert", "id": "views", "version": 1, "definition": pat})
    assert res.ok and [p.id for p in rs2.patterns_for_event("page_view")] == ["views"]
    j = {"id": "onboarding", "version": 2, "entry": {"event": "register"},
         "steps": [{"id": "hi", "send": "nobody", "next": "end"}, {"id": "end", "end": True}]}
    same, res = apply_control(rs2, {"kind": "journey", "op": "upsert", "id": "onboarding", "definition": j})
    assert same is rs2 and res.reason == ("journey 'onboarding': step 'hi' sends rule 'nobody', which does not exist; "
                                          "define the rule (trigger: {journey: onboarding}) first")


def test_batch_creates_a_journey_with_its_rules_atomically():
    import yaml

    from operators.rules.model import Policy
    from operators.rules.registry import batch_for_document

    doc = yaml.safe_load(BASE)
    empty = RuleSet.build(Policy())
    journey_alone = {"kind": "journey", "op": "upsert", "id": "onboarding", "definition": doc["journeys"][0]}
    assert not apply_control(empty, journey_alone)[1].ok  # its send step's rule does not exist yet
    rule_alone = {"kind": "rule", "op": "upsert", "id": "welcome_email", "definition": doc["rules"][0]}
    assert not apply_control(empty, rule_alone)[1].ok  # its trigger's journey does not exist yet
    rs, res = apply_control(empty, batch_for_document(doc))
    assert res.ok and rs.version == 1 and len(res.items) == 9
    assert sorted(rs.rules) == sorted(base().rules) and sorted(rs.patterns) == ["cart_abandon"]
    assert ids(rs.rules_for_event("register")) == ["high", "low"]
    _, res = apply_control(rs, batch_for_document(doc))  # publishing the same file twice: no-op items
    assert res.ok and {i.reason for i in res.items} == {"already at version 1 (replayed message)",
                                                        "already at version 2 (replayed message)",
                                                        "already at version 3 (replayed message)"}
    assert res.to_json()["items"][0]["id"] == "cart_abandon"


def test_batch_is_all_or_nothing():
    rs = base()
    good = rule_msg("low", 2)
    bad = rule_msg("high", 4, actions=[])
    same, res = apply_control(rs, {"kind": "batch", "items": [good, bad]})
    assert same is rs and res.reason.startswith("item 1 (rule 'high'): broken definition, version 3 keeps running")
    assert res.reason.endswith("; nothing of the batch was applied") and rs.rules["low"].version == 1
    dangling = {"kind": "batch", "items": [good, {"kind": "pattern", "op": "delete", "id": "cart_abandon"}]}
    same, res = apply_control(rs, dangling)
    assert same is rs and res.reason == ("rule 'cart': triggers on pattern 'cart_abandon', which does not exist; "
                                         "define the pattern first or fix the id; nothing of the batch was applied")
    both = {"kind": "batch", "items": [{"kind": "rule", "op": "delete", "id": "cart"},
                                       {"kind": "pattern", "op": "delete", "id": "cart_abandon"}]}
    rs2, res = apply_control(rs, both)  # negative control: with its dependant gone, the delete goes through
    assert res.ok and rs2.version == 2 and [i.cleanup.state for i in res.items] == [("held:cart",),
                                                                                      ("pattern:cart_abandon",)]
    assert apply_control(rs, {"kind": "batch", "items": []})[1].reason == (
        "a batch needs a non-empty list of control messages under 'items'; nothing of the batch was applied")
    assert apply_control(rs, {"kind": "batch", "items": [{"kind": "batch", "items": [good]}]})[1].reason == (
        "item 0 is a batch; batches do not nest; nothing of the batch was applied")


def test_policy_is_replaced_as_a_whole():
    rs = base()
    caps = {"frequency": [{"channels": ["sms"], "max": 2, "window": "1d"}], "default_timezone": "America/New_York"}
    rs2, res = apply_control(rs, {"kind": "policy", "op": "upsert", "definition": caps})
    assert res == ControlResult(True, "policy", "upsert", None, None, 2)
    assert rs2.policy.default_timezone == "America/New_York" and rs2.policy.frequency[0].max == 2
    assert rs2.max_window_ms == 86_400_000 and ids(rs2.rules_for_event("register")) == ["high", "low"]
    same, res = apply_control(rs2, {"kind": "policy", "op": "upsert", "definition": caps})
    assert same is rs2 and res.reason == "unchanged"
    same, res = apply_control(rs2, {"kind": "policy", "op": "upsert", "definition": {"consent": {"sms": "maybe"}}})
    assert same is rs2 and res.reason == ("broken policy, the running one stays: <control policy>: policy at "
                                          "$.policy.consent.sms: 'maybe' is not allowed; use one of opt_in, opt_out, none")
    assert apply_control(rs2, {"kind": "policy", "op": "delete"})[1].reason == (
        "a policy is replaced as a whole: send op upsert with the complete policy as definition")


def test_control_never_raises_on_mangled_definitions():
    import copy
    import random

    import yaml

    from operators.rules.model import Policy
    from operators.rules.registry import batch_for_document

    doc = yaml.safe_load(BASE)
    rnd = random.Random(7)
    junk = [None, 0, -1, "x", "", [], {}, True, 1.5, "Asia/Nowhere", "25:00", {"event": "x"}, ["a", "a"]]

    def mangle(o) -> None:
        if isinstance(o, dict) and o:
            k = rnd.choice(list(o))
            r = rnd.random()
            if r < 0.3:
                o[k] = copy.deepcopy(rnd.choice(junk))
            elif r < 0.5:
                del o[k]
            elif r < 0.6:
                o["zz"] = 1
            else:
                mangle(o[k])
        elif isinstance(o, list) and o:
            i = rnd.randrange(len(o))
            if rnd.random() < 0.3:
                o[i] = copy.deepcopy(rnd.choice(junk))
            else:
                mangle(o[i])

    empty, outcomes = RuleSet.build(Policy()), set()
    for _ in range(600):
        d = copy.deepcopy(doc)
        for _ in range(rnd.randint(1, 3)):
            mangle(d)
        rs, res = apply_control(empty, batch_for_document(d))
        assert res.ok == (rs is not empty) and (res.ok or res.reason)
        outcomes.add(res.ok)
    assert outcomes == {True, False}  # some mangles are harmless (e.g. an extra name), most are not
