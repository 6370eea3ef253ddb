"""Computed traits (operators/traits.py, config/schema.py ``traits:``), pure: the loader's messages; the
filter's SQL subset; the person-side engine exact under anchors moving between persons (a from-scratch
reference, and a negative control that drops retractions); the shipped profile's 16 fields written as traits
give the specialised profile's values on the generator's stream."""

from __future__ import annotations

import random
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from config.schema import SHIPPED, SchemaError, load_schema, parse_schema
from config.settings import JobSettings, PiiSettings
from operators.envelope import DecodedFields, Pseudonyms, decode_full
from operators.traits import (
    Partial,
    TraitBuckets,
    TraitError,
    compile_traits,
    event_partial,
    exact_props,
    merge,
)

PROPS = """
common_props:
  category: {type: string}
  store_id: {type: string}
  tier: {type: integer}
  discount: {type: decimal}
  paid: {type: boolean}
traits:
"""


def _schema(traits: str, file: str = "s.yaml"):
    return parse_schema(PROPS + traits, file)


@pytest.mark.parametrize(("traits", "message"), [
    ("  n: {aggregate: count, prop: category}\n",
     "s.yaml:9: traits.n: count counts events: remove prop (or use distinct_count to count its values)"),
    ("  n: {aggregate: sum}\n", "s.yaml:9: traits.n: sum needs a prop: name one of the event's props (or amount, ts, "
     "item_id, campaign, channel)"),
    ("  n: {aggregate: sum, prop: category}\n",
     "s.yaml:9: traits.n: sum needs an integer or decimal prop; props.category is string"),
    ("  n: {aggregate: last, prop: colour}\n",
     "s.yaml:9: traits.n.prop: props.colour is not declared for every event type (common_props): declare it first "
     "(or use amount, ts, item_id, campaign, channel)"),
    ("  n: {aggregate: count, window: 91d}\n",
     "s.yaml:9: traits.n.window: '91d': write lifetime or a whole number of minutes, hours or days (60m, 24h, 30d), "
     "at most 90d"),
    ("  n: {aggregate: count, window: 2w}\n",
     "s.yaml:9: traits.n.window: '2w': write lifetime or a whole number of minutes, hours or days (60m, 24h, 30d), "
     "at most 90d"),
    ("  N-1: {aggregate: count}\n",
     "s.yaml:9: trait 'N-1': write a-z, 0-9 and _ starting with a letter, at most 40 characters"),
    ("  n: {aggregate: median, prop: tier}\n", "s.yaml:9: traits.n.aggregate: Input should be 'count', 'sum', "
     "'min', 'max', 'distinct_count', 'first' or 'last'"),
])
def test_trait_errors_name_the_line_and_what_to_do(traits: str, message: str) -> None:
    with pytest.raises(SchemaError) as e:
        _schema(traits)
    assert str(e.value) == message


@pytest.mark.parametrize(("where", "message"), [
    ("lower(props.category) == 'shoes'", "s.yaml:9:"),
    ("props.category > 'a'", "text props compare with == and != only in a trait filter"),
    ("props.tier == 'gold'", "this compares a num prop with a str literal: it is never true"),
    ("props.paid == true", "props.paid is boolean: a trait filter reads string, integer and decimal props"),
    ("props.colour == 'red'", "props.colour is not declared for this event type: declare it first"),
    ("props.tier + 1 > 3", "not supported in a trait filter"),
    ("props.category in props.store_id", "'in' takes a non-empty literal list in a trait filter"),
    ("props.tier", "a trait filter must be a condition"),
])
def test_filters_outside_the_exact_sql_subset_are_refused_at_their_position(where: str, message: str) -> None:
    schema = _schema(f'  n: {{aggregate: count, where: "{where}"}}\n')
    with pytest.raises(TraitError) as e:
        compile_traits(schema)
    assert message in str(e.value)
    assert str(e.value).startswith("traits.n.where: s.yaml:9:")


def test_filters_compile_to_two_valued_sql() -> None:
    schema = _schema('  n: {aggregate: count, where: "not (props.tier >= 3) and props.category in [\'a\', \'b\'] '
                     'or props.store_id is null"}\n')
    (t,) = compile_traits(schema)
    assert t.where_sql == ("(((NOT COALESCE(CAST(JSON_VALUE(props, '$.tier') AS DECIMAL(38, 18)) >= 3, FALSE)) AND "
                           "COALESCE(JSON_VALUE(props, '$.category') IN ('a', 'b'), FALSE)) OR "
                           "(JSON_VALUE(props, '$.store_id') IS NULL))")
    # the Python side: a missing tier makes the comparison false, so "not" is true (as COALESCE makes it in SQL)
    assert t.matches("x", {"category": "a"}) and not t.matches("x", {"category": "c", "store_id": "s"})
    assert not t.matches("x", {"tier": 3, "category": "a", "store_id": "s"})


def test_numbers_reach_the_filter_exactly() -> None:
    assert exact_props('{"discount": 0.1, "tier": 3}') == {"discount": Decimal("0.1"), "tier": 3}
    schema = _schema('  n: {aggregate: count, where: "props.discount >= 0.1"}\n')
    (t,) = compile_traits(schema)
    assert t.matches("x", exact_props('{"discount": 0.1}'))  # a float 0.1 would be > Decimal 0.1
    assert not t.matches("x", exact_props('{"discount": 0.099999999999999999}'))
    # beyond 18 places the SQL's DECIMAL(38, 18) rounds, and so does the Python side
    assert t.matches("x", exact_props('{"discount": 0.0999999999999999999}'))
    assert t.matches("x", exact_props('{"discount": "0.1"}'))  # a number sent as text (the schema allows it)


# ------------------------------------------------------------------------------------- the engine

ENGINE = """
  c: {aggregate: count, window: 2h}
  s: {aggregate: sum, prop: discount}
  lo: {aggregate: min, prop: discount, window: 1d}
  hi: {aggregate: max, prop: tier}
  d: {aggregate: distinct_count, prop: category, window: 90m}
  f: {aggregate: first, prop: store_id}
  la: {aggregate: last, prop: store_id, where: "props.category != 'x'"}
"""


def _reference(traits, events, as_of: int) -> dict[str, object]:
    """Values from the person's events directly (no partials)."""
    from zhongtai.devtools.generator.oracle import _trait

    out = {}
    for t in traits:
        evs = []
        for ts, eid, props in events:
            if t.matches("e", props):
                v = t.prop_value(props, {"ts": ts})
                if v is not None:
                    evs.append((ts, eid, v))
        out[t.name] = _trait(t, evs, as_of)
    return {k: v for k, v in out.items() if v is not None}


def _drive(seed: int, *, drop_retractions: bool = False) -> tuple[dict, dict]:
    """Anchors' events and a person map that merges and splits; the person side fed the changelog of the
    re-keyed partials (what zt_person_traits emits). Returns (engine values, reference values) per person."""
    rng = random.Random(seed)
    traits = compile_traits(_schema(ENGINE))
    anchors = [f"a{i}" for i in range(8)]
    person_of = {a: f"p{i % 4}" for i, a in enumerate(anchors)}
    events: dict[str, list] = defaultdict(list)  # anchor → events
    table: dict[tuple, Partial] = {}  # (person, trait, minute, dv) → partial as last emitted
    state: dict[str, TraitBuckets] = defaultdict(TraitBuckets)
    t0 = 1_700_000_000_000
    last_seen: dict[str, int] = defaultdict(int)

    def partials(ts: int, eid: str, props: dict) -> list[tuple[str, int, str, Partial]]:
        out = []
        for t in traits:
            v = t.prop_value(props, {"ts": ts}) if t.matches("e", props) else None
            if v is not None:
                out.append((t.name, ts // 60_000, str(v) if t.spec.aggregate == "distinct_count" else "",
                            event_partial(t, ts, eid, v)))
        return out

    def rekey() -> None:
        want: dict[tuple, Partial] = {}
        for a, evs in events.items():
            for _ts, _eid, _props, ps in evs:
                for name, minute, dv, part in ps:
                    k = (person_of[a], name, minute, dv)
                    want[k] = merge(want.get(k), part)
        for k in set(table) | set(want):
            if table.get(k) != want.get(k):
                if want.get(k) is None and drop_retractions:
                    continue
                p, name, minute, dv = k
                state[p].apply(name, minute, dv, want.get(k), last_seen[p])
        table.clear()
        table.update(want)

    for i in range(200):
        a = rng.choice(anchors)
        ts = t0 + rng.randrange(0, 6 * 3_600_000)
        props = {"category": rng.choice(["a", "b", "x"]), "tier": rng.randrange(5),
                 "discount": Decimal(rng.randrange(1000)) / 100}
        if rng.random() < 0.7:
            props["store_id"] = f"s{rng.randrange(4)}"
        events[a].append((ts, f"e{i:04d}", props, partials(ts, f"e{i:04d}", props)))
        if rng.random() < 0.05:  # a merge or split: the anchor moves
            person_of[rng.choice(anchors)] = f"p{rng.randrange(4)}"
        # last_seen as the profile has it: the newest event of the person's current anchors
        newest = {a2: max(e[0] for e in evs) for a2, evs in events.items() if evs}
        last_seen = defaultdict(int)
        for a2, t in newest.items():
            last_seen[person_of[a2]] = max(last_seen[person_of[a2]], t)
        rekey()
    got, want = {}, {}
    for p in sorted(set(person_of.values())):
        evs = [e[:3] for a, es in events.items() if person_of[a] == p for e in es]
        got[p] = {k: v for k, v in state[p].values(traits, last_seen[p]).items() if v is not None}
        want[p] = _reference(traits, evs, last_seen[p]) if evs else {}
        if not evs:
            got[p] = {k: v for k, v in got[p].items() if v not in (0, "0")}
    return got, want


@pytest.mark.parametrize("seed", range(5))
def test_the_engine_is_exact_when_anchors_move_between_persons(seed: int) -> None:
    got, want = _drive(seed)
    assert got == want
    assert any(w for w in want.values())


def test_negative_control_ignoring_retractions_is_wrong() -> None:
    assert any(g != w for g, w in (_drive(s, drop_retractions=True) for s in range(5)))


def test_the_state_codec_round_trips() -> None:
    tb = TraitBuckets()
    tb.apply("s", 10, "", (2, Decimal("1.5"), Decimal("0.5"), Decimal("1"), None, None), 600_000)
    tb.apply("f", 11, "", (1, None, None, None, "000000000660000|e1|s1", "000000000660000|e1|s1"), 660_000)
    tb.out["s"] = "1.5"
    assert TraitBuckets.from_json(tb.to_json()) == tb


# --------------------------------------------------------------------- the 16 profile fields as traits


def test_the_profile_fields_as_traits_equal_the_specialised_profile() -> None:
    """config/profile_traits.yaml through the trait engine (partials per person and minute, as the job's SQL
    makes them, then ``TraitBuckets``) equals the oracle's profile (the shipped 16 fields) on a generated
    stream, for every person."""
    from zhongtai.devtools.generator import GeneratorConfig, expected, generate

    schema = load_schema(Path(SHIPPED).with_name("profile_traits.yaml"))
    traits = compile_traits(schema)
    assert [t.name for t in traits] == ["first_seen", "last_seen", "last_purchase", "events", "views", "carts",
                                        "purchases", "gmv", "views_1h", "views_24h", "views_7d", "carts_7d",
                                        "purchases_30d", "gmv_30d", "purchases_90d", "gmv_90d"]
    job = JobSettings()
    records = list(generate(GeneratorConfig(seed=5, persons=60, events=3000), job))
    # the 16 fields (the oracle also lists the buckets it keeps, b:*)
    profiles = {p: {k: v for k, v in f.items() if not k.startswith("b:")} for p, f in expected(records, job)["profiles"].items()}
    pseud = Pseudonyms(PiiSettings(), None, schema)
    seen: set[str] = set()
    parts: dict[str, dict[tuple[str, int, str], Partial]] = defaultdict(dict)
    for r in records:
        f = decode_full(r.value, r.timestamp_ms, job, pseud)
        if not isinstance(f, DecodedFields) or f.event.event_id in seen:
            continue
        e = f.event
        seen.add(e.event_id)
        props = exact_props(f.props)
        cols = {"amount": e.amount, "ts": e.ts, "item_id": f.item_id, "campaign": e.campaign, "channel": e.channel}
        for t in traits:
            if t.matches(e.event_type, props):
                v = t.prop_value(props, cols)
                k = (t.name, e.ts // 60_000, "")
                parts[e.person][k] = merge(parts[e.person].get(k), event_partial(t, e.ts, e.event_id, v))
    got = {}
    for person, ps in parts.items():
        tb = TraitBuckets()
        last = max(p[3] or 0 for (n, _, _), p in ps.items() if n == "last_seen")
        for (name, minute, dv), p in sorted(ps.items(), key=lambda kv: kv[0][1]):
            tb.apply(name, minute, dv, p, last)
        got[person] = {k: v for k, v in tb.values(traits, int(last)).items() if v is not None}
    assert got == profiles
    assert sum(1 for p in profiles.values() if "last_purchase" in p) > 5


# ------------------------------------------------------------------------- through the person step

STEP_SCHEMA = """
common_props:
  category: {type: string}
traits:
  shoes_30d: {aggregate: count, event: purchase, where: "props.category == 'shoes'", window: 30d}
  spend: {aggregate: sum, event: purchase, prop: amount}
"""
STEP_TAGS = """
version: 1
tags:
  - name: shoe_lover
    description: test
    expression: traits.shoes_30d >= 2 and traits.spend > 100
"""


def _m(op: str, minute: int, ts: int, purchases: int) -> list:
    return [ts, "m", op, minute, 0, 0, purchases, purchases, None, ts, ts, ts]


def _x(op: str, trait: str, minute: int, n: int, s: str | None = None) -> list:
    return [minute * 60_000, "x", op, minute, n, None, None, None, s, None, None, None, trait, "",
            f"{s},{s}" if s else None, None, None]


def test_the_person_step_writes_changed_traits_and_tags_read_them() -> None:
    from operators.person import PersonState, on_rows
    from operators.profile import DictRows, Profile
    from operators.tags import TagSet

    traits = compile_traits(parse_schema(STEP_SCHEMA, "s.yaml"))
    tagset = TagSet.from_yaml_text(STEP_TAGS, "t.yaml")
    st = PersonState("p1", Profile.empty())
    rows = DictRows()
    t = 1_700_000_000_000
    m = t // 60_000
    out = on_rows(st, [_m("INSERT", m, t, 1), _x("INSERT", "shoes_30d", m, 1), _x("INSERT", "spend", m, 1, "80.00")],
                  rows, tagset, None, None, traits)
    assert [(o.kind, o.item.trait, o.item.value) for o in out] == [("trait", "shoes_30d", 1), ("trait", "spend", "80.00")]
    # a second shoe purchase, and more spend: the tag (which reads only traits) is added
    out = on_rows(st, [_m("UPDATE_BEFORE", m, t, 1), _m("UPDATE_AFTER", m, t + 1, 2),
                       _x("UPDATE_AFTER", "shoes_30d", m, 2), _x("UPDATE_AFTER", "spend", m, 2, "130.00")],
                  rows, tagset, None, None, traits)
    assert [(o.kind, getattr(o.item, "trait", None) or o.item.tag) for o in out] == \
        [("trait", "shoes_30d"), ("trait", "spend"), ("tag", "shoe_lover")]
    # negative control: a bundle that changes no trait value writes none and flips no tag
    assert on_rows(st, [_x("UPDATE_AFTER", "spend", m, 2, "130.00")], rows, tagset, None, None, traits) == []
    # the anchor moves away (a split): the partials and buckets are deleted, every trait is cleared
    out = on_rows(st, [_m("DELETE", m, t + 1, 2), _x("DELETE", "shoes_30d", m, 2), _x("DELETE", "spend", m, 2, "130.00")],
                  rows, tagset, None, None, traits)
    assert sorted((o.kind, o.item.trait, o.item.value) if o.kind == "trait" else (o.kind, o.item.tag, o.item.op)
                  for o in out) == [("tag", "shoe_lover", "remove"), ("trait", "shoes_30d", None),
                                    ("trait", "spend", None)]
    assert st.is_empty()


def test_rules_read_traits_as_profile_fields_as_of_their_time() -> None:
    from operators.person import _ProfileView
    from operators.profile import DictRows, Profile

    traits = compile_traits(parse_schema(STEP_SCHEMA, "s.yaml"))
    tb = TraitBuckets()
    t = 1_700_000_000_000
    tb.apply("shoes_30d", t // 60_000, "", (3, None, None, None, None, None), t)
    view = _ProfileView(Profile.empty(), DictRows(), t, traits, tb)
    assert view["shoes_30d"] == 3 and view.get("spend") == 0 and "nope" not in view
    # 31 days later the 30-day window no longer holds that minute
    assert _ProfileView(Profile.empty(), DictRows(), t + 31 * 86_400_000, traits, tb)["shoes_30d"] == 0
    # without traits the view knows the profile fields only (as before)
    assert _ProfileView(Profile.empty(), DictRows(), t).get("shoes_30d") is None
