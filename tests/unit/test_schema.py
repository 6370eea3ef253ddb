"""The declared event schema (config/schema.py) and its Python checks (operators.envelope): the loader's
messages name file, line and what to do; each prop type accepts and rejects exactly the documented values;
declared props reach the rules typed; computed action params (``${expr}``)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from config.schema import SHIPPED, EventSchema, SchemaError, load_schema, parse_schema
from config.settings import ConfigError, load_settings
from operators.envelope import JsonNumber, check_props, typed_props

RETAIL = """
common_props:
  tier: {type: integer}
events:
  purchase:
    props:
      store_id: {type: string, required: true}
      discount: {type: decimal}
      paid_at: {type: timestamp}
      gift: {type: boolean}
      tags: {type: list}
"""


def test_the_shipped_schema_is_the_envelope_only() -> None:
    assert load_schema() == EventSchema() == load_settings().event_schema
    assert SHIPPED.name == "schema.yaml" and SHIPPED.parent.name == "config"


@pytest.mark.parametrize(("text", "message"), [
    ("events:\n  purchase:\n    props:\n      store_id: {type: float}\n",
     "s.yaml:4: events.purchase.props.store_id.type: 'float' is not a prop type: write one of string, integer, "
     "decimal, boolean, timestamp, list"),
    ("common_props:\n  price: {type: decimal}\n",
     "s.yaml:2: props.price is read by the envelope itself (docs/semantics.md): do not declare it (built in: "
     "price, qty, campaign_id, channel, item_id, experiment_id, variation_id)"),
    ("common_props:\n  a: {type: string}\n  a: {type: integer}\n", "s.yaml:3: common_props.a is declared twice: keep one"),
    ("events:\n  Purchase: {}\n",
     "s.yaml:2: event type 'Purchase': write a-z, 0-9 and _ starting with a letter, at most 64 characters "
     "(as events send it)"),
    ("identifiers:\n  phone: {}\n",
     "s.yaml:2: 'phone' is a built-in identifier type: declare only new ones (built in: user_id, unionid, "
     "openid, phone, email, device_id, cookie_id)"),
    ("common_props:\n  x: {}\n",
     "s.yaml:2: common_props.x.type: type is missing: give each prop a type (string, integer, decimal, boolean, "
     "timestamp, list)"),
    ("events:\n  purchase:\n    prop: {}\n",
     "s.yaml:3: events.purchase.prop: 'prop' is not a schema key here: check its spelling (docs/schema.md)"),
    ("common_props:\n  on: {type: string}\n",
     "s.yaml:2: common_props.on: YAML reads this key as something other than text (on/off/yes/no, numbers, ~): "
     "quote it"),
    ("common_props:\n  tier: {type: integer}\nevents:\n  purchase:\n    props:\n      tier: {type: string}\n",
     "s.yaml:6: props.tier is already a common prop: declare it once"),
    ("events: [purchase\n", "s.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>'"),
])
def test_schema_errors_name_the_line_and_what_to_do(text: str, message: str) -> None:
    with pytest.raises(SchemaError) as e:
        parse_schema(text, "s.yaml")
    assert str(e.value) == message


def test_a_broken_schema_file_stops_the_settings_with_its_line(tmp_path) -> None:
    f = tmp_path / "schema.yaml"
    f.write_text("common_props:\n  tier: {type: int}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{f}:2: common_props.tier.type: 'int' is not a prop type"):
        load_settings(overrides={"schema_file": str(f)})
    with pytest.raises(ConfigError, match="does not exist: set schema_file to an existing file"):
        load_settings(overrides={"schema_file": str(tmp_path / "missing.yaml")})
    f.write_text(RETAIL, encoding="utf-8")
    assert list(load_settings(overrides={"schema_file": str(f)}).event_schema.events) == ["purchase"]


def test_reasons_list_every_check() -> None:
    assert parse_schema(RETAIL).reasons() == (
        "wrong_type:props.tier", "out_of_range:props.tier", "missing_field:props.store_id",
        "wrong_type:props.store_id", "wrong_type:props.discount", "out_of_range:props.discount",
        "wrong_type:props.paid_at", "wrong_type:props.gift", "wrong_type:props.tags")


N = JsonNumber


@pytest.mark.parametrize(("props", "reason"), [
    ({"store_id": "s1"}, None),
    ({"store_id": N("12"), "tier": N("3")}, None),
    ({"store_id": True, "tier": "-4"}, None),
    ({}, "missing_field:props.store_id"),
    ({"store_id": None}, "missing_field:props.store_id"),
    ({"store_id": ""}, "missing_field:props.store_id"),
    ({"store_id": {"a": 1}}, "wrong_type:props.store_id"),
    ({"store_id": ["s"]}, "wrong_type:props.store_id"),
    ({"store_id": "s", "tier": N("2.0")}, "wrong_type:props.tier"),
    ({"store_id": "s", "tier": "3 "}, "wrong_type:props.tier"),
    ({"store_id": "s", "tier": ""}, "wrong_type:props.tier"),
    ({"store_id": "s", "tier": N("9999999999999999")}, None),
    ({"store_id": "s", "tier": N("10000000000000000")}, "out_of_range:props.tier"),
    ({"store_id": "s", "discount": N("1e3")}, None),
    ({"store_id": "s", "discount": "0.25"}, None),
    ({"store_id": "s", "discount": "NaN"}, "wrong_type:props.discount"),
    ({"store_id": "s", "discount": N("1e16")}, "out_of_range:props.discount"),
    ({"store_id": "s", "paid_at": "2026-11-20T00:00:00Z"}, None),
    ({"store_id": "s", "paid_at": N("1795132800000")}, None),
    ({"store_id": "s", "paid_at": N("1.5")}, "wrong_type:props.paid_at"),
    ({"store_id": "s", "gift": False}, None),
    ({"store_id": "s", "gift": "true"}, "wrong_type:props.gift"),
    ({"store_id": "s", "tags": ["a", "b"]}, None),
    ({"store_id": "s", "tags": []}, None),
    ({"store_id": "s", "tags": ["a", N("1")]}, "wrong_type:props.tags"),
    ({"store_id": "s", "tags": ["a"] * 1001}, "wrong_type:props.tags"),
    ({"store_id": "s", "tags": "a"}, "wrong_type:props.tags"),
])
def test_each_type_accepts_and_rejects_exactly(props: dict, reason: str | None) -> None:
    checks = parse_schema(RETAIL).prop_checks()
    assert check_props("purchase", props, checks) == reason


def test_checks_apply_to_their_event_type_and_common_props_to_all() -> None:
    checks = parse_schema(RETAIL).prop_checks()
    assert check_props("page_view", {}, checks) is None  # store_id is required on purchases only
    assert check_props("page_view", {"tier": "x"}, checks) == "wrong_type:props.tier"
    # the first failing prop in declaration order wins: common props first
    assert check_props("purchase", {"tier": "x"}, checks) == "wrong_type:props.tier"


def test_typed_props_give_rules_the_declared_types() -> None:
    schema = parse_schema(RETAIL)
    text = ('{"tier":"3","store_id":12,"discount":"0.10","paid_at":"2026-11-20T00:00:00Z","gift":true,'
            '"tags":["a"],"extra":{"n":1.5,"k":2},"price":"9.90"}')
    assert typed_props("purchase", text, schema) == {
        "tier": 3, "store_id": "12", "discount": Decimal("0.10"), "paid_at": 1795132800000, "gift": True,
        "tags": ["a"], "extra": {"n": 1.5, "k": 2}, "price": "9.90"}
    assert typed_props("page_view", '{"tier":"4"}', schema) == {"tier": 4}
    assert typed_props("page_view", '{"tier":"4"}', EventSchema()) is None  # nothing declared: as sent


RULES = """
rules:
  - id: r
    version: 1
    trigger: {event: [purchase]}
    actions:
      - {channel: coupon, template: t, params: {store: "${event.props.store_id}", n: 1, p: "${event.props.price * 2}",
         t: "${tags}", literal: "a ${b}"}}
"""


def test_computed_params_are_evaluated_when_the_action_is_built() -> None:
    from operators.rules.engine import evaluate
    from operators.rules.model import Event
    from operators.rules.registry import RuleSet
    from operators.rules.schema import load_text

    rs = RuleSet.from_definitions(load_text(RULES, "r.yaml"))
    ev = Event("e1", "purchase", 1_000, "p1", {"store_id": "s9", "price": Decimal("2.50")})
    res = evaluate(rs, None, ev, {}, frozenset({"vip", "new"}), 1_000)
    assert [a.params for a in res.actions] == [
        {"store": "s9", "n": 1, "p": "5.00", "t": ["new", "vip"], "literal": "a ${b}"}]


def test_a_computed_param_error_points_at_its_token() -> None:
    from operators.rules.schema import DefinitionError, load_text

    text = RULES.replace("${event.props.store_id}", "${event.props.store_id +}")
    with pytest.raises(DefinitionError) as e:
        load_text(text, "r.yaml")
    # column 81: just after the '+', where the operand is missing (the "${" is counted)
    assert str(e.value) == ("r.yaml:7:81: rule 'r' at $.rules[0].actions[0].params.store: expression error: "
                            "unexpected end of expression: an operand is missing; fix the expression")


def test_the_collector_validates_with_the_declared_schema(tmp_path) -> None:
    """The collector answers a schema-breaking event with the job's reason (negative control: the same event
    passes without the schema)."""
    import orjson

    from zhongtai.services.collector.app import Collector

    f = tmp_path / "schema.yaml"
    f.write_text(RETAIL, encoding="utf-8")
    event = orjson.dumps({"event_id": "e1", "event_type": "purchase", "ts": 1_000, "ids": {"user_id": "u1"},
                          "props": {"store_id": "s1", "tier": "gold"}})
    assert Collector(load_settings(overrides={"schema_file": str(f)})).validate(event, 1_000) == "wrong_type:props.tier"
    assert not isinstance(Collector(load_settings()).validate(event, 1_000), str)
