"""The strategy engine inside the person operator (``pipelines.person.attach_person`` with a rule set) on the
embedded mini-cluster, p=2.

One job run with collection sources (events, an updating person-minutes view from a GROUP BY, control
messages); its action / suppressed / control-result views are collected. Then, exactly:

* welcome on register: the event rule's push and the onboarding journey's e-mail; the journey's SMS and
  the no-login reminder are suppressed (``no_consent``: SMS is opt-in);
* cart abandonment fires once, by timer, at add_to_cart + 30 min when no purchase follows; not when a
  purchase follows within 30 min although it arrives after a later event (out of order, inside the
  lateness); it does fire when the purchase comes after 40 min;
* a second abandonment the same day is suppressed ``frequency_capped`` with the rule's cap as detail;
* campaign budgets (3 and 2) over 10 persons spread over both subtasks: exactly 3 and 2 granted, the rest
  ``budget_exhausted``; negative control: the same candidates through a per-person budget grant 20;
* hot reload: a v2 upsert of a rule changes what the running job does (new template; a profile condition
  that reads the person-minutes profile), a broken v3 is rejected with its reason and v2 keeps working;
  the time from the control record leaving its source to the operator installing it is measured;
* a tag the person-minutes profile adds (a test tag set: ``churn_risk`` when gmv ≥ 900) triggers its rule in the
  same operator;
* every action_id is emitted once, and is the documented deterministic id.

Two gates make "before" and "after" the reload well defined without sleeping for a guessed time: the
control source waits until the phase-1 login_hello v1 action is out, and the event source stops at a gate
row until the control results are out.
"""

from __future__ import annotations

import os
import site
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from operators.messages import Action
from operators.rules.engine import action_id
from operators.rules.guards import BudgetState, budget_step
from operators.rules.registry import RuleSet
from operators.rules.schema import load_text
from operators.tags import TagSet
from tests.helpers import ROOT, fresh_names, make_settings

MIN, HOUR = 60_000, 3_600_000
T0 = 1_767_232_800_000  # 2026-01-01T02:00Z = 10:00 in Shanghai: outside every quiet-hours window
GATE = "__gate__"

EXTRA_RULES = [
    {"id": "promo_a", "version": 1, "campaign": "camp_a", "trigger": {"event": ["coupon_claim"]},
     "actions": [{"channel": "coupon", "template": "a10"}], "constraints": {"budget": {"max": 3}}},
    {"id": "promo_b", "version": 1, "campaign": "camp_b", "trigger": {"event": ["coupon_claim"]},
     "actions": [{"channel": "coupon", "template": "b20"}], "constraints": {"budget": {"max": 2}}},
    {"id": "login_hello", "version": 1, "campaign": "hello", "trigger": {"event": ["login"]},
     "actions": [{"channel": "webhook", "template": "hello_v1"}]},
]
HELLO_V2 = {"id": "login_hello", "version": 2, "campaign": "hello", "trigger": {"event": ["login"]},
            "condition": "profile.gmv >= 100 and profile.purchases >= 2",
            "actions": [{"channel": "webhook", "template": "hello_v2"}]}
HELLO_V3_BROKEN = {**HELLO_V2, "version": 3, "condition": "profile.gmv = 100"}
CONTROL = [
    {"kind": "rule", "op": "upsert", "id": "login_hello", "version": 2, "definition": HELLO_V2},
    {"kind": "rule", "op": "upsert", "id": "login_hello", "version": 3, "definition": HELLO_V3_BROKEN},
]


def ruleset() -> RuleSet:
    doc = yaml.safe_load((ROOT / "config" / "rules.yaml").read_text(encoding="utf-8"))
    doc["rules"].extend(EXTRA_RULES)
    return RuleSet.from_definitions(load_text(yaml.safe_dump(doc, allow_unicode=True), "test_rules_job.yaml"))


def ev(person: str, eid: str, etype: str, ts: int, amount: str | None = None) -> tuple:
    return (person, eid, etype, ts, "(none)", "app", Decimal(amount) if amount else None, None)


PHASE1 = [
    ev("p_new", "r1", "register", T0),
    ev("p_cart1", "c1", "add_to_cart", T0),
    ev("p_cart2", "c2", "add_to_cart", T0),
    ev("p_cart2", "v2", "page_view", T0 + 25 * MIN),   # a later event arrives first ...
    ev("p_cart2", "b2", "purchase", T0 + 10 * MIN, "99.00"),  # ... the purchase within 30 min after it
    ev("p_hot", "l1", "login", T0 + MIN),
    *[ev(f"p_claim{i}", f"k{i}", "coupon_claim", T0 + i * 1000) for i in range(10)],
    ev("p_noise", "n1", "wishlist", T0),  # no rule listens: filtered in SQL
]
PHASE2 = [
    ev("p_cart3", "c3", "add_to_cart", T0),
    ev("p_cart3", "b3", "purchase", T0 + 40 * MIN, "10.00"),
    ev("p_cap", "c4", "add_to_cart", T0),
    ev("p_cap", "c5", "add_to_cart", T0 + 2 * HOUR),
    ev("p_rich", "l2", "login", T0 + 5 * MIN),
    ev("p_poor", "l3", "login", T0 + 5 * MIN),
]
#: (person, mb, views, carts, purchases, events, gmv, first, last, last_purchase): two rows of one p_rich
#: minute make the GROUP BY emit an update.
MINUTES = [
    ("p_rich", T0 // MIN, 0, 0, 1, 1, "100.00", T0, T0, T0),
    ("p_rich", T0 // MIN, 0, 0, 1, 1, "50.00", T0 + 1000, T0 + 1000, T0 + 1000),
    ("p_poor", T0 // MIN, 0, 0, 1, 1, "50.00", T0, T0, T0),
    ("p_churn", T0 // MIN, 0, 0, 1, 1, "999.00", T0, T0, T0),
]
#: The test's tag set: churn_risk (the trigger of rule churn_risk_survey) as soon as the profile has 900.00.
TAGS = TagSet.from_yaml_text("""
tags:
  - name: churn_risk
    description: test
    expression: gmv >= 900
""", "test-rules-tags.yaml")


class Gate:
    """Map over the event rows: holds the gate row until ``n`` control results are in ``path``."""

    def __init__(self, path: str, n: int) -> None:
        self.path, self.n = path, n

    def __call__(self, row: Any) -> Any:
        if row[2] == GATE:
            wait_for(self.path, lambda text: len(text.splitlines()) >= self.n, f"{self.n} control results")
        return row


def wait_for(path: str, ok: Any, what: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if os.path.exists(path) and ok(Path(path).read_text(encoding="utf-8")):
            return
        time.sleep(0.05)
    raise RuntimeError(f"test gate: {what} not in {path} after 90 s")


class Stamp:
    """Map over the control payloads: holds them until the phase-1 action of rule login_hello v1 is out,
    then writes the wall time each one leaves the source."""

    def __init__(self, path: str, actions_path: str) -> None:
        self.path, self.actions_path = path, actions_path

    def __call__(self, row: Any) -> Any:
        wait_for(self.actions_path, lambda text: "hello_v1" in text, "the login_hello v1 action")
        version = orjson.loads(row)["version"] if row.startswith("{\"") else None
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{version} {int(time.time() * 1000)}\n")
        return row


class Results:
    """Map over the collected rows: appends control results and actions to files (what the gates wait for)."""

    def __init__(self, results_path: str, actions_path: str) -> None:
        self.paths = {"r": results_path, "a": actions_path}

    def __call__(self, row: Any) -> Any:
        if row[0] in self.paths:
            with open(self.paths[row[0]], "a", encoding="utf-8") as f:
                f.write(row[1] + "\n")
        return row


def run_job(tmp: Path) -> tuple[list[dict], list[dict], list[dict], dict[str, str]]:
    from pyflink.common import Types

    from connectors.jvm import zhongtai_jar
    from pipelines.person import attach_person, event_row_type
    from zhongtai.jobs.runner import RunOptions, make_envs

    settings = make_settings(
        flink={"parallelism": 2, "options": {"python.pythonpath": f"{site.getsitepackages()[0]}:{ROOT}",
                                             "restart-strategy.type": "none"}},
        # watermark = max ts - 60 s; idleness far away so the gate's pause does not mark the input idle
        job={"watermark_delay_ms": 60_000, "source_idle_timeout_ms": 600_000},
    )
    env, t_env = make_envs(settings, RunOptions(resume=False, job_name=f"rules{fresh_names().tag}"),
                           [zhongtai_jar(settings)])
    results_path, stamps_path, actions_path = (str(tmp / n) for n in ("results.txt", "stamps.txt", "actions.txt"))
    ev_types = event_row_type()
    rows = [*PHASE1, ev("p_gate", "g", GATE, T0), *PHASE2]
    events = env.from_collection(rows, type_info=ev_types).map(
        Gate(results_path, len(CONTROL) + 1), output_type=ev_types).set_parallelism(1)
    t_env.create_temporary_view("ev_raw", t_env.from_data_stream(events))
    t_env.execute_sql("""CREATE TEMPORARY VIEW zt_person_events AS
        SELECT person, event_id, event_type, ts_ms, campaign, channel, CAST(amount AS DECIMAL(18, 2)) AS amount,
               item_id, CAST(NULL AS STRING) AS props FROM ev_raw""")
    values = ", ".join(
        f"('{p}', CAST({mb} AS BIGINT), CAST({v} AS BIGINT), CAST({c} AS BIGINT), CAST({pu} AS BIGINT), "
        f"CAST({e} AS BIGINT), CAST({g} AS DECIMAL(18, 2)), CAST({f} AS BIGINT), CAST({la} AS BIGINT), "
        f"CAST({lp} AS BIGINT))" for p, mb, v, c, pu, e, g, f, la, lp in MINUTES)
    t_env.execute_sql(f"""CREATE TEMPORARY VIEW zt_person_minutes AS
        SELECT person, mb, SUM(v) AS n_views, SUM(c) AS n_carts, SUM(pu) AS n_purchases, SUM(e) AS n_events,
               SUM(g) AS n_gmv, MIN(f) AS first_ts, MAX(la) AS last_ts, MAX(lp) AS last_purchase
        FROM (VALUES {values}) AS t(person, mb, v, c, pu, e, g, f, la, lp) GROUP BY person, mb""")
    payloads = [orjson.dumps(m).decode() for m in CONTROL] + ["{not json"]
    control = env.from_collection(payloads, type_info=Types.STRING()).map(
        Stamp(stamps_path, actions_path), output_type=Types.STRING()).set_parallelism(1)
    t_env.create_temporary_view("control_raw", t_env.from_data_stream(control))
    t_env.create_temporary_view("zt_control", t_env.sql_query("SELECT f0 AS payload FROM control_raw"))

    attach_person(t_env, settings, tagset=TAGS, ruleset=ruleset(), control_view="zt_control")

    out = t_env.to_data_stream(t_env.sql_query("""
        SELECT 'a' AS t, payload FROM zt_actions UNION ALL SELECT 's', payload FROM zt_suppressed
        UNION ALL SELECT 'r', payload FROM zt_rules_control_results"""))
    row_type = Types.ROW_NAMED(["t", "payload"], [Types.STRING(), Types.STRING()])
    # The gates block a source task, which then sends no checkpoint barrier: the engine's broadcast input
    # (always aligned, even with unaligned checkpoints) would wait behind the first barrier for ever.
    env.get_checkpoint_config()._j_checkpoint_config.disableCheckpointing()
    got = [(r[0], orjson.loads(r[1])) for r in out.map(Results(results_path, actions_path), output_type=row_type).execute_and_collect()]
    stamps = dict(line.split() for line in Path(stamps_path).read_text().splitlines())
    return ([p for t, p in got if t == "a"], [p for t, p in got if t == "s"], [p for t, p in got if t == "r"], stamps)


def trigger_key(t: dict) -> str:
    """The documented trigger key of an action's trigger record (docs/rules.md)."""
    if t["type"] == "event":
        return f"event:{t['event_id']}"
    if t["type"] == "pattern":
        return f"pattern:{t['pattern']}:{t['key']}:{t['event_id']}"
    if t["type"] == "journey":
        return f"journey:{t['journey']}:{t['event_id']}:{t['step']}"
    return f"{t['type']}:{t['tag']}:{t['ts_ms']}"


@pytest.mark.flink
def test_rules_job_end_to_end(tmp_path: Path) -> None:
    actions, suppressed, results, stamps = run_job(tmp_path)
    ids = [a["action_id"] for a in actions] + [s["action_id"] for s in suppressed]
    assert len(ids) == len(set(ids)), "an action_id was emitted twice"
    rules = ruleset().rules
    for a in actions:
        key = trigger_key(a["trigger"])
        specs = rules[a["rule_id"]].actions if a["rule_version"] == 1 else ()
        index = next((i for i, sp in enumerate(specs) if sp.template == a["template"]), 0)
        assert a["action_id"] == action_id(a["rule_id"], a["rule_version"], a["person_id"], key, index)

    def of(person: str) -> tuple[set, set]:
        return ({(a["rule_id"], a["channel"], a["template"], a["ts_ms"]) for a in actions if a["person_id"] == person},
                {(s["rule_id"], s["reason"]) for s in suppressed if s["person_id"] == person})

    # welcome on register (event rule + journey); SMS steps have no opt-in
    assert of("p_new") == ({("welcome_register", "push", "welcome_push", T0),
                            ("onboarding_welcome_email", "email", "welcome_email", T0)},
                           {("onboarding_activation_sms", "no_consent"), ("register_no_login_reminder", "no_consent")})
    # cart abandonment: once, by timer, at start + 30 min; not with a purchase inside 30 min (out of order)
    cart = ("cart_abandon_reminder", "push", "cart_reminder", T0 + 30 * MIN)
    assert of("p_cart1") == ({cart}, set())
    assert of("p_cart2")[0] == set()
    assert of("p_cart3")[0] == {cart}  # the purchase came after 40 min
    [c1] = [a for a in actions if a["person_id"] == "p_cart1"]
    assert c1["trigger"] == {"type": "pattern", "pattern": "cart_abandon", "key": "", "event_id": "c1", "ts_ms": T0 + 30 * MIN}
    # frequency cap: the second abandonment of the day is suppressed with the rule's cap
    assert of("p_cap") == ({cart}, {("cart_abandon_reminder", "frequency_capped")})
    [capped] = [s for s in suppressed if s["person_id"] == "p_cap"]
    assert capped["ts_ms"] == T0 + 2 * HOUR + 30 * MIN and "1d" in capped["detail"], capped["detail"]
    # tag trigger
    assert of("p_churn") == ({("churn_risk_survey", "email", "churn_survey", T0)}, set())
    # filtered event types never reach the engine
    assert of("p_noise") == (set(), set())

    # budgets: exact per campaign at p=2
    claims = [a for a in actions if a["rule_id"] in ("promo_a", "promo_b")]
    denied = [s for s in suppressed if s["rule_id"] in ("promo_a", "promo_b")]
    assert Counter(a["campaign"] for a in claims) == {"camp_a": 3, "camp_b": 2}
    assert Counter(s["campaign"] for s in denied) == {"camp_a": 7, "camp_b": 8}
    assert {s["reason"] for s in denied} == {"budget_exhausted"}
    assert {(x["person_id"], x["rule_id"]) for x in claims + denied} == {
        (f"p_claim{i}", r) for i in range(10) for r in ("promo_a", "promo_b")}
    # negative control: the same candidates, budget kept per person (what the person-keyed operator could do)
    per_person = 0
    for x in claims + denied:
        act = Action.from_json({k: v for k, v in x.items() if k not in ("reason", "detail")})
        _, granted, _ = budget_step(BudgetState(act.campaign), [act])
        per_person += len(granted)
    assert per_person == 20  # > 3 + 2: the per-person budget overshoots

    # hot reload: v1 before the gate, v2 after it (profile condition), broken v3 rejected, v2 keeps running
    by_version = {r["version"]: r for r in results}
    assert sorted((r["ok"], str(r["version"])) for r in results) == [(False, "3"), (False, "None"), (True, "2")]
    assert "'=' is not an operator" in by_version[3]["reason"], by_version[3]["reason"]
    assert "keeps running" in by_version[3]["reason"]
    assert "not JSON" in by_version[None]["reason"]
    assert of("p_hot")[0] == {("login_hello", "webhook", "hello_v1", T0 + MIN)}
    assert of("p_rich")[0] == {("login_hello", "webhook", "hello_v2", T0 + 5 * MIN)}
    assert of("p_poor")[0] == set()  # gmv 50: the v2 condition reads the profile from the minutes view
    assert [a["rule_version"] for a in actions if a["person_id"] == "p_rich"] == [2]
    latency = [r["applied_at_ms"] - int(stamps[str(r["version"])]) for r in results]
    print(f"control record → installed in the operator: {latency} ms")
    assert all(0 <= x < 1000 for x in latency), latency


@pytest.mark.flink
def test_rules_job_without_control_or_tags() -> None:
    """The fixed-rule-set variant (no control view) at parallelism 1: event rules, a timer-driven pattern and a
    budget, from the same collection sources."""
    from bench.rules_job_bench import collection_inputs
    from connectors.jvm import zhongtai_jar
    from pipelines.person import attach_person
    from zhongtai.jobs.runner import RunOptions, make_envs

    settings = make_settings(flink={"parallelism": 1, "options": {"restart-strategy.type": "none"}},
                             job={"watermark_delay_ms": 60_000})
    env, t_env = make_envs(settings, RunOptions(resume=False, job_name=f"rules{fresh_names().tag}"),
                           [zhongtai_jar(settings)])
    rows = [ev("p_new", "r1", "register", T0), ev("p_cart1", "c1", "add_to_cart", T0),
            *[ev(f"p_claim{i}", f"k{i}", "coupon_claim", T0 + i) for i in range(4)]]
    collection_inputs(env, t_env, rows, "p_new")
    attach_person(t_env, settings, tagset=TAGS, ruleset=ruleset())
    out = t_env.to_data_stream(t_env.sql_query(
        "SELECT 'a' AS t, payload FROM zt_actions UNION ALL SELECT 's', payload FROM zt_suppressed"))
    got = [(r[0], orjson.loads(r[1])) for r in out.execute_and_collect()]
    acts = sorted((p["person_id"], p["rule_id"]) for t, p in got if t == "a")
    assert [a for a in acts if not a[0].startswith("p_claim")] == [
        ("p_cart1", "cart_abandon_reminder"), ("p_new", "onboarding_welcome_email"), ("p_new", "welcome_register")]
    assert Counter(r for p, r in acts if p.startswith("p_claim")) == {"promo_a": 3, "promo_b": 2}
    assert Counter(p["reason"] for t, p in got if t == "s" and p["rule_id"].startswith("promo")) == {
        "budget_exhausted": 3}
