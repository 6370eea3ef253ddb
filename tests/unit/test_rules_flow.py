"""The builder's flow ↔ definitions conversion (operators/rules/flow.py) and the server-side checks of
zhongtai/services/api/builder.py that need no service (pure)."""

from __future__ import annotations

import copy

import pytest
import yaml

from operators.rules.flow import FlowError, document_to_flow, flow_to_document
from operators.rules.registry import RuleSet
from operators.rules.schema import load_text
from tests.helpers import ROOT
from zhongtai.services.api.builder import check_expression, flow_document

#: The source document's onboarding flow as the builder's canvas holds it: register → welcome e-mail now →
#: wait for a login within 1 day → (none) SMS → exit; a purchase exits the journey.
ONBOARDING = {
    "journey": {"id": "onboarding", "version": 1, "name": "Welcome and activation", "campaign": "onboarding",
                "exit": ["purchase"]},
    "nodes": [
        {"id": "entry", "type": "entry", "x": 0, "y": 0, "event": "register"},
        {"id": "welcome", "type": "send", "x": 200, "y": 0,
         "rule": {"id": "onboarding_welcome_email", "version": 1, "name": "Onboarding: welcome e-mail",
                  "channel": "email", "template": "welcome_email", "params": {}, "condition": "", "quiet_hours": {}}},
        {"id": "wait_login", "type": "wait_for", "x": 400, "y": 0, "event": "login", "within": "1d"},
        {"id": "nudge", "type": "send", "x": 600, "y": 100,
         "rule": {"id": "onboarding_activation_sms", "version": 1, "name": "Onboarding: not activated after a day",
                  "channel": "sms", "template": "activation_reminder", "params": {},
                  "quiet_hours": {"start": "21:00", "end": "09:00", "mode": "hold"}}},
        {"id": "activated", "type": "end", "x": 600, "y": 0},
        {"id": "done", "type": "end", "x": 800, "y": 100},
    ],
    "edges": [
        {"from": "entry", "port": "next", "to": "welcome"},
        {"from": "welcome", "port": "next", "to": "wait_login"},
        {"from": "wait_login", "port": "on_event", "to": "activated"},
        {"from": "wait_login", "port": "on_timeout", "to": "nudge"},
        {"from": "nudge", "port": "next", "to": "done"},
    ],
}


def shipped() -> dict:
    """config/rules.yaml's onboarding journey and the two rules its steps send."""
    doc = yaml.safe_load((ROOT / "config" / "rules.yaml").read_text(encoding="utf-8"))
    [journey] = [j for j in doc["journeys"] if j["id"] == "onboarding"]
    rules = {r["id"]: r for r in doc["rules"] if r["id"] in ("onboarding_welcome_email", "onboarding_activation_sms")}
    return {"journey": journey, "rules": rules}


def test_the_drawn_onboarding_flow_is_the_shipped_yaml() -> None:
    doc = flow_to_document(ONBOARDING)
    ship = shipped()
    [journey] = doc["journeys"]
    # the same steps (the walk lists them depth first: activated before nudge; only the first step's place matters)
    assert {s["id"]: s for s in journey["steps"]} == {s["id"]: s for s in ship["journey"]["steps"]}
    assert journey["steps"][0] == ship["journey"]["steps"][0]
    assert {k: v for k, v in journey.items() if k != "steps"} == {k: v for k, v in ship["journey"].items()
                                                                   if k != "steps"}
    assert {r["id"]: r for r in doc["rules"]} == ship["rules"]
    # and it parses into the same rule set objects the job runs
    a = RuleSet.from_definitions(load_text(yaml.safe_dump(doc), "flow.yaml"))
    b = RuleSet.from_definitions(load_text(yaml.safe_dump({"journeys": [ship["journey"]],
                                                            "rules": list(ship["rules"].values())}), "ship.yaml"))
    assert a.journeys["onboarding"].steps == b.journeys["onboarding"].steps
    assert a.journeys["onboarding"].first_step == b.journeys["onboarding"].first_step == "welcome"


def test_a_running_journey_drawn_and_emitted_again_is_unchanged() -> None:
    ship = shipped()
    flow = document_to_flow(ship["journey"], ship["rules"])
    assert [n["id"] for n in flow["nodes"]] == ["entry", "welcome", "wait_login", "nudge", "activated", "done"]
    assert flow["journey"]["campaign"] == "onboarding" and flow["journey"]["exit"] == ["purchase"]
    again = flow_to_document(flow)
    assert {s["id"]: s for s in again["journeys"][0]["steps"]} == {s["id"]: s for s in ship["journey"]["steps"]}
    assert {r["id"]: r for r in again["rules"]} == ship["rules"]


def test_branch_and_wait_nodes() -> None:
    flow = {"journey": {"id": "j", "version": 2},
            "nodes": [{"id": "entry", "type": "entry", "tag_added": "vip"},
                      {"id": "w", "type": "wait", "duration": "2h"},
                      {"id": "b", "type": "branch", "branches": [{"if": "profile.gmv >= 100"}, {"if": "'x' in tags"}]},
                      {"id": "big", "type": "send", "rule": {"channel": "coupon", "template": "c20", "params": {"pct": 20}}},
                      {"id": "e1", "type": "end"}, {"id": "e2", "type": "end"}],
            "edges": [{"from": "entry", "port": "next", "to": "w"}, {"from": "w", "port": "next", "to": "b"},
                      {"from": "b", "port": "if0", "to": "big"}, {"from": "b", "port": "if1", "to": "e1"},
                      {"from": "b", "port": "else", "to": "e2"}, {"from": "big", "port": "next", "to": "e1"}]}
    doc = flow_to_document(flow)
    assert doc["journeys"][0] == {
        "id": "j", "version": 2, "entry": {"tag_added": "vip"},
        "steps": [{"id": "w", "wait": "2h", "next": "b"},
                  {"id": "b", "branch": [{"if": "profile.gmv >= 100", "next": "big"}, {"if": "'x' in tags", "next": "e1"}],
                   "else": "e2"},
                  {"id": "big", "send": "j_big", "next": "e1"},
                  {"id": "e1", "end": True}, {"id": "e2", "end": True}]}
    assert doc["rules"] == [{"id": "j_big", "version": 1, "trigger": {"journey": "j"},
                             "actions": [{"channel": "coupon", "template": "c20", "params": {"pct": 20}}]}]
    load_text(yaml.safe_dump(doc), "branch.yaml")  # a valid document


@pytest.mark.parametrize(("change", "expected"), [
    (lambda f: f["edges"].pop(), ("nudge", "next", "output 'next' leads nowhere")),
    (lambda f: f["nodes"].append({"id": "lost", "type": "end"}), ("lost", "id", "not reachable from the entry")),
    (lambda f: f["nodes"].append({"id": "entry2", "type": "entry", "event": "x"}), (None, "entry", "exactly one entry")),
    (lambda f: f["edges"].append({"from": "welcome", "port": "next", "to": "done"}), ("welcome", "next", "two arrows")),
    (lambda f: f["edges"].append({"from": "done", "port": "next", "to": "welcome"}), ("done", "next", "has no output")),
    (lambda f: f["nodes"].append({"id": "welcome", "type": "end"}), ("welcome", "id", "two nodes are called")),
    (lambda f: f["edges"].__setitem__(0, {"from": "entry", "port": "next", "to": "ghost"}),
     ("entry", "next", "not on the canvas")),
])
def test_structural_problems_name_the_node(change, expected) -> None:
    flow = copy.deepcopy(ONBOARDING)
    change(flow)
    with pytest.raises(FlowError) as e:
        flow_to_document(flow)
    node, field, text = expected
    assert any(p.node == node and p.field == field and text in p.message for p in e.value.problems), e.value.problems


def test_schema_problems_come_back_on_their_node() -> None:
    flow = copy.deepcopy(ONBOARDING)
    flow["nodes"][2]["within"] = "one day"  # not a duration (the JSON Schema stage)
    doc, problems = flow_document(flow)
    assert doc is None and [(p["node"], p["field"]) for p in problems] == [("wait_login", "wait_for.within")], problems
    flow = copy.deepcopy(ONBOARDING)
    flow["nodes"][3]["rule"]["condition"] = "profile.gmv = 100"  # '=' is not an operator (the checks stage)
    doc, problems = flow_document(flow)
    assert doc is None and [(p["node"], p["field"]) for p in problems] == [("nudge", "rule.condition")], problems
    assert "expression error" in problems[0]["message"]
    # negative control: the unchanged flow has none
    assert flow_document(ONBOARDING)[1] == []


def test_expression_check_points_at_the_token() -> None:
    assert check_expression("profile.gmv >= 100 and 'vip' in tags") == {"ok": True, "kind": "bool"}
    out = check_expression("profile.gmv >= 100 and profil.x > 1")
    assert out["ok"] is False and out["offset"] == 23 and out["length"] == len("profil.x"), out
    out = check_expression("profile.gmv = 100")
    assert out["ok"] is False and "profile.gmv = 100"[out["offset"]:out["offset"] + out["length"]] == "=", out


def test_event_types_the_job_does_not_route_are_warned_about() -> None:
    from zhongtai.services.api.builder import unrouted_warnings

    doc = flow_to_document(ONBOARDING)
    warned = unrouted_warnings(doc, frozenset({"register", "consent", "unsubscribe"}))
    assert [(w["node"], w["field"]) for w in warned] == [("wait_login", "event"), (None, "exit")]
    assert "'login'" in warned[0]["message"] and "job.rules_event_types" in warned[0]["message"]
    # negative control: routed types give none
    assert unrouted_warnings(doc, frozenset({"register", "login", "purchase"})) == []


def test_an_edited_journey_keeps_what_the_form_does_not_show() -> None:
    journey, rules = shipped()["journey"], dict(shipped()["rules"])
    sms = {**rules["onboarding_activation_sms"], "priority": 40, "group": "onboarding",
           "constraints": {"frequency": [{"max": 1, "window": "7d"}], "budget": {"max": 500},
                           "quiet_hours": {"start": "21:00", "end": "09:00", "mode": "hold"}}}
    rules["onboarding_activation_sms"] = sms
    again = {r["id"]: r for r in flow_to_document(document_to_flow(journey, rules))["rules"]}
    assert again["onboarding_activation_sms"] == sms
    # negative control: the extras are what carried them
    flow = document_to_flow(journey, rules)
    for n in flow["nodes"]:
        if n["type"] == "send":
            n["rule"].pop("extra")
    bare = {r["id"]: r for r in flow_to_document(flow)["rules"]}["onboarding_activation_sms"]
    assert "priority" not in bare and bare["constraints"] == {"quiet_hours": sms["constraints"]["quiet_hours"]}
