"""Definition files: every problem with file:line:column, object, JSON path and what to do (pure)."""

from __future__ import annotations

import json
import textwrap

import pytest

from operators.rules.model import Budget, FrequencyCap, Pattern, QuietHours, Trigger
from operators.rules.schema import (
    SCHEMA,
    DefinitionError,
    load_file,
    load_text,
    parse_definition,
    parse_duration,
)


def problems(text: str, file: str = "rules.yaml") -> list[str]:
    with pytest.raises(DefinitionError) as e:
        load_text(textwrap.dedent(text), file)
    return [str(p) for p in e.value.problems]


def test_schema_errors_name_line_rule_path_and_fix():
    assert problems("""\
        rules:
          - id: r1
            version: 1
            triger: {event: [register]}
            actions:
              - {channel: fax, template: hi}
            constraints:
              frequency: [{max: 1, window: 30 mins}]
        """) == [
        ("rules.yaml:4:13: rule 'r1' at $.rules[0].triger: unknown key 'triger'; remove it or fix its spelling "
        "(allowed: actions, campaign, condition, constraints, description, group, id, name, paused, priority, "
        "trigger, version)"),
        "rules.yaml:2:5: rule 'r1' at $.rules[0]: missing required key 'trigger'; add it",
        ("rules.yaml:6:19: rule 'r1' at $.rules[0].actions[0].channel: 'fax' is not allowed; use one of email, sms, "
        "push, webhook, coupon"),
        ("rules.yaml:8:36: rule 'r1' at $.rules[0].constraints.frequency[0].window: bad duration '30 mins'; "
        "write e.g. 30m, 1h, 7d or whole milliseconds"),
    ]


def test_checks_beyond_the_schema():
    assert problems("""\
        rules:
          - id: r1
            version: 1
            trigger: {event: [register], tag_added: vip}
            actions: [{channel: push, template: hi}]
            constraints:
              quiet_hours: {start: "22:00", end: "22:00", timezone: Asia/Shangai}
          - id: r1
            version: 2
            trigger: {event: [login]}
            actions: [{channel: push, template: hi}]
        """) == [
        ("rules.yaml:4:14: rule 'r1' at $.rules[0].trigger: give exactly one trigger kind, found event, tag_added; "
        "split the rule into one rule per trigger"),
        ("rules.yaml:7:20: rule 'r1' at $.rules[0].constraints.quiet_hours: start and end are both 22:00; "
        "give a non-empty window or remove quiet_hours"),
        ("rules.yaml:7:61: rule 'r1' at $.rules[0].constraints.quiet_hours.timezone: unknown time zone "
        "'Asia/Shangai'; use an IANA name such as Asia/Shanghai or America/New_York"),
        "rules.yaml:8:9: rule 'r1' at $.rules[1].id: duplicate rule id 'r1'; ids must be unique, rename one",
    ]


def test_duplicate_yaml_keys_and_syntax_errors():
    assert problems("""\
        rules:
          - id: r2
            version: 1
            trigger: {event: [x]}
            actions: [{channel: push, template: hi}]
            actions: [{channel: sms, template: hi}]
        """) == ["rules.yaml:6:14: rule 'r2' at $.rules[0].actions: key 'actions' appears twice in one mapping; keep one"]
    assert problems("rules: [{id: off, version: 1, trigger: {event: [x]}, actions: [{channel: push, template: t}]}]"
                    ) == [("rules.yaml:1:14: rule False at $.rules[0].id: YAML reads this value as the boolean false "
                          "(yes/no/on/off do that); quote it")]
    assert problems("rules: [ {id: x") == [
        "rules.yaml:1:16: at $: not valid YAML/JSON: expected ',' or '}', but got '<stream end>'; fix the syntax"]



def test_mapping_keys_yaml_reads_as_booleans_or_numbers_are_problems():
    # unquoted on/yes/2 as keys became True/2 and the action's params failed later in orjson (non-text keys)
    doc = ("rules: [{id: r, version: 1, trigger: {event: [x]}, "
           "actions: [{channel: push, template: t, params: {on: 1, 2: b, ok: c}}]}]")
    assert problems(doc) == [
        ("rules.yaml:1:104: rule 'r' at $.rules[0].actions[0].params.on: YAML reads the key 'on' as a boolean, "
         "not as text (yes/no/on/off, numbers, dates and ~ do that); quote it: 'on'"),
        ("rules.yaml:1:110: rule 'r' at $.rules[0].actions[0].params.2: YAML reads the key '2' as an integer, "
         "not as text (yes/no/on/off, numbers, dates and ~ do that); quote it: '2'"),
    ]
    # negative control: the same keys quoted are text and load
    quoted = doc.replace("{on: 1, 2: b", "{'on': 1, '2': b")
    (rule,) = load_text(quoted, "rules.yaml").rules
    assert rule.actions[0].params == {"on": 1, "2": "b", "ok": "c"}


def test_json_files_get_lines_too():
    doc = '{"rules": [{"id": "Bad Id", "version": 0, "trigger": {"event": ["x"]}, "actions": []}]}'
    assert problems(doc, "rules.json") == [
        "rules.json:1:83: rule 'Bad Id' at $.rules[0].actions: needs at least 1 item(s); add them",
        ("rules.json:1:19: rule 'Bad Id' at $.rules[0].id: bad id 'Bad Id'; start with a lower-case letter, "
        "then lower-case letters, digits, _ . - (at most 64)"),
        "rules.json:1:40: rule 'Bad Id' at $.rules[0].version: 0 is below the minimum 1; use 1 or more",
    ]


TWO_RULES_ONE_JOURNEY = """\
        rules:
          - {id: r2, version: 1, trigger: {pattern: nope}, actions: [{channel: push, template: hi}]}
          - {id: r3, version: 1, trigger: {event: [x]}, actions: [{channel: push, template: hi}]}
        journeys:
          - id: j
            version: 1
            entry: {event: register}
"""


def test_references_and_journey_links():
    assert problems(TWO_RULES_ONE_JOURNEY + """\
            steps:
              - {id: a, send: r3, next: b}
              - {id: c, wait: 1h}
        """) == [
        "rules.yaml:10:9: journey 'j' at $.journeys[0].steps[1]: step 'c' (wait) needs 'next'; add it",
        ("rules.yaml:9:9: journey 'j' at $.journeys[0].steps[0]: next names step 'b', which this journey does "
        "not have; use one of a, c"),
    ]
    assert problems(TWO_RULES_ONE_JOURNEY + """\
            steps: [{id: a, send: r3, next: b}, {id: b, end: true}]
        """) == [
        ("rules.yaml:2:5: rule 'r2' at $.rules[0]: triggers on pattern 'nope', which does not exist; define the "
        "pattern first or fix the id"),
        ("rules.yaml:5:5: journey 'j' at $.journeys[0]: step 'a' sends rule 'r3', whose trigger is not "
        "{journey: j}; set that rule's trigger to this journey"),
    ]


def test_pattern_kind_keys_and_policy():
    assert problems("""\
        patterns:
          - {id: p, version: 1, type: count, start: {event: a}, within: 1h}
        """) == [
        ("rules.yaml:2:45: pattern 'p' at $.patterns[0].start: 'start' does not belong to a count pattern; "
        "remove it (a count pattern takes event, count)"),
        "rules.yaml:2:5: pattern 'p' at $.patterns[0]: missing required key 'event' for a count pattern; add it",
        "rules.yaml:2:5: pattern 'p' at $.patterns[0]: missing required key 'count' for a count pattern; add it",
    ]
    assert problems("policy: {default_timezone: Nowhere/Land, consent: {sms: maybe}}") == [
        "rules.yaml:1:57: policy at $.policy.consent.sms: 'maybe' is not allowed; use one of opt_in, opt_out, none"]
    assert problems("policy: {default_timezone: Nowhere/Land}") == [
        ("rules.yaml:1:28: policy at $.policy.default_timezone: unknown time zone 'Nowhere/Land'; use an IANA name "
        "such as Asia/Shanghai or America/New_York")]


def test_a_valid_file_parses_into_frozen_definitions(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text(textwrap.dedent("""\
        policy:
          frequency: [{channels: [sms], max: 1, window: 1d}, {max: 3, window: 7d, name: all_messages}]
        patterns:
          - {id: views, version: 2, type: count, event: {event: page_view}, by: props.item_id, count: 3, within: 1h}
        rules:
          - id: offer
            version: 4
            priority: 7
            group: g
            campaign: c1
            trigger: {pattern: views}
            actions: [{channel: coupon, template: t, params: {pct: 10}}]
            constraints:
              frequency: [{max: 2, window: 1d}]
              quiet_hours: {start: "21:30", end: "08:15", timezone: America/New_York, mode: drop}
              budget: {max: 100}
        """))
    d = load_file(f)
    r = d.rules[0]
    assert (r.id, r.version, r.priority, r.group, r.campaign) == ("offer", 4, 7, "g", "c1")
    assert r.trigger == Trigger("pattern", ("views",)) and r.actions[0].params == {"pct": 10}
    assert r.constraints.frequency == (FrequencyCap("rule:1d", 2, 86_400_000),)
    assert r.constraints.quiet_hours == QuietHours(21 * 60 + 30, 8 * 60 + 15, "America/New_York", "drop")
    assert r.constraints.budget == Budget("c1", 100) and r.source == f"{f}:6"
    assert d.policy.frequency == (FrequencyCap("channel:sms:1d", 1, 86_400_000, ("sms",)),
                                  FrequencyCap("all_messages", 3, 7 * 86_400_000,
                                               ("email", "sms", "push", "webhook", "coupon")))
    p = d.patterns[0]
    assert isinstance(p, Pattern) and (p.kind, p.count, p.by, p.within_ms) == ("count", 3, ("props", "item_id"), 3_600_000)


def test_parse_definition_for_control_messages_and_durations():
    with pytest.raises(DefinitionError) as e:
        parse_definition("rule", {"id": "x", "version": 1, "trigger": {}, "actions": [{"channel": "sms"}]})
    assert [str(p) for p in e.value.problems] == [
        "<control rule x>: rule 'x' at $.actions[0]: missing required key 'template'; add it",
        ("<control rule x>: rule 'x' at $.trigger: empty object; give one of event, journey, pattern, tag_added, "
        "tag_removed"),
    ]
    with pytest.raises(DefinitionError, match="unknown kind 'tag'; use rule, pattern or journey"):
        parse_definition("tag", {})
    assert [parse_duration(v) for v in ("500ms", "30s", "30m", "1h", "7d", "2w", 42)] == [
        500, 30_000, 1_800_000, 3_600_000, 604_800_000, 1_209_600_000, 42]
    with pytest.raises(ValueError, match="bad duration '1y'"):
        parse_duration("1y")
    json.dumps(SCHEMA)  # the schema is plain JSON (python -m operators.rules.schema prints it)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_missing_required_key_is_named() -> None:
    with pytest.raises(DefinitionError) as e:
        load_text("rules:\n  - id: x\n", file="r.yaml")
    assert [str(p) for p in e.value.problems] == [
        "r.yaml:2:5: rule 'x' at $.rules[0]: missing required key 'version'; add it",
        "r.yaml:2:5: rule 'x' at $.rules[0]: missing required key 'trigger'; add it",
        "r.yaml:2:5: rule 'x' at $.rules[0]: missing required key 'actions'; add it",
    ]
