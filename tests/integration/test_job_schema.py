"""A declared event schema through the real job (issue 14): a retailer's own props are checked by the
decode (bad ones to the DLQ with the prop's name), reach a rule's condition with their declared type, and
fill a coupon's params (``${event.props.store_id}``).

Schema: ``tier`` (integer) on every event, ``store_id`` (string, required) and ``order_id`` on purchases.
Rule: a purchase by a member of tier 3 or more gets a coupon for the store they bought in.
- ua buys with tier ``"3"`` (a string: the schema makes it the integer 3) and store_id ``12`` (a number:
  the schema makes it the text "12") → one coupon with params {store: "12", tier: 3, pct: 10};
- ub buys with tier 2 → no coupon (the condition's negative control);
- uc buys without store_id → DLQ ``missing_field:props.store_id``; ud with tier "gold" → DLQ
  ``wrong_type:props.tier``; ue views a page with an undeclared prop → valid, kept as sent.

Custom identifier types: ``member_card`` (as sent) and ``alipay_uid`` (lower-cased, keyed hash). A
member buys in the store with only their card (f1), then logs in with the card and an Alipay id in
another spelling (f2, f3): one person holding the card and one hashed Alipay id; ``zhongtai profile get``
finds them by either, in any spelling.
"""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Producer

from connectors.redis_store import RedisStore
from operators.identity.model import person_id
from operators.pii import pseudonymise
from tests.helpers import event_record, fresh_names, make_settings
from tests.workers_env import read_topic
from zhongtai.jobs.runner import RunOptions, run_events_job
from zhongtai.services.profiles import get_profile

pytestmark = [pytest.mark.stack, pytest.mark.flink]

SCHEMA = """
identifiers:
  member_card: {normalise: none}
  alipay_uid: {normalise: lower, hashed: true}
common_props:
  tier: {type: integer}
events:
  purchase:
    props:
      store_id: {type: string, required: true}
      order_id: {type: string}
"""

RULES = """
policy:
  default_timezone: UTC
  consent: {email: opt_out, sms: opt_in, push: opt_out, webhook: none, coupon: none}
rules:
  - id: tier_store_coupon
    version: 1
    campaign: members
    trigger: {event: [purchase]}
    condition: "event.props.tier >= 3"
    actions:
      - {channel: coupon, template: store_coupon,
         params: {store: "${event.props.store_id}", tier: "${event.props.tier}", pct: 10}}
"""


def test_declared_props_are_checked_typed_and_reach_rules_and_params(tmp_path) -> None:
    n = fresh_names()
    schema = tmp_path / "schema.yaml"
    schema.write_text(SCHEMA, encoding="utf-8")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    settings = make_settings(schema_file=str(schema), redis={"prefix": n.prefix},
                             kafka={"topics": {"actions_prefix": f"zt.t{n.tag}.actions."}},
                             identity={"priority": ["user_id", "member_card", "unionid", "phone", "email",
                                                    "alipay_uid", "openid", "device_id", "cookie_id"],
                                       "max_per_person": {"member_card": 1, "alipay_uid": 2}})
    prefix = settings.kafka.topics.actions_prefix
    t0 = int(time.time() * 1000) - 600_000
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    sent = [
        event_record("a1", "purchase", "ua", t0, price="10.00", tier="3", store_id=12, order_id="o1"),
        event_record("b1", "purchase", "ub", t0, price="10.00", tier=2, store_id="s2"),
        event_record("c1", "purchase", "uc", t0, price="10.00", tier=5),
        event_record("d1", "purchase", "ud", t0, price="10.00", tier="gold", store_id="s4"),
        event_record("e1", "page_view", "ue", t0, tier=4, shelf={"aisle": 7}),
        event_record("f1", "page_view", {"member_card": "MC-7"}, t0),
        event_record("f2", "page_view", {"member_card": "MC-7", "alipay_uid": " Zhang@Pay "}, t0 + 1_000),
        event_record("f3", "page_view", {"alipay_uid": "ZHANG@PAY"}, t0 + 2_000),
    ]
    for value in sent:
        p.produce(n.topic_prefix + "web", value, key=b"k", timestamp=t0)
    assert p.flush(30) == 0
    run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern,
                                        dlq_topic=n.dlq, redis_prefix=n.prefix, hbase=False, resume=False,
                                        job_name=n.job, rules=True, rules_file=str(rules), actions_prefix=prefix,
                                        experiments=False, attribution=False))
    coupons = [orjson.loads(v) for _, v, _ in read_topic(settings, prefix + "coupon")]
    assert [(a["person_id"], a["rule_id"], a["params"]) for a in coupons] == [
        (person_id("user_id:ua"), "tier_store_coupon", {"store": "12", "tier": 3, "pct": 10})]
    dlq = sorted((orjson.loads(v)["event_id"], h["zt.reason"]) for _, v, h in read_topic(settings, n.dlq))
    assert dlq == [("c1", "missing_field:props.store_id"), ("d1", "wrong_type:props.tier")]
    store = RedisStore(settings.redis, prefix=n.prefix)
    try:
        stats = store.stats()
        assert (stats["received"], stats["valid"], stats["dlq"]) == (8, 6, 2), stats
        assert (stats["dlq:missing_field:props.store_id"], stats["dlq:wrong_type:props.tier"]) == (1, 1), stats
        assert store.action_counters() == {"tier_store_coupon|coupon": 1}
        ali = pseudonymise("alipay_uid", "zhang@pay", settings.pii.hmac_secret.get_secret_value(),
                           custom=settings.event_schema.identifiers)
        member = store.person_of("member_card:MC-7")
        assert member is not None and store.person_of(f"alipay_uid:{ali}") == member
        assert sorted(store.identifiers(member)) == sorted(["member_card:MC-7", f"alipay_uid:{ali}"])
        assert "zhang" not in str(store.id_mapping()).lower()  # the Alipay id is never stored in clear
        for spelling in ("alipay_uid:Zhang@Pay", "member_card:MC-7"):
            assert get_profile(settings, spelling, prefix=n.prefix)["person"] == member, spelling
    finally:
        store.delete_prefix()
        store.close()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_the_generated_retail_stream_under_its_schema_is_exact(parallelism: int) -> None:
    """The generator's stream with ``config/retail_schema.yaml`` (every prop it writes declared, order_id
    required on purchases) is exact against the oracle decoding with the same schema; three extra records
    break the schema, each counted once under its own reason."""
    from config.schema import SHIPPED
    from tests.helpers import counter_mismatches, load_expected, profile_mismatches
    from zhongtai.devtools.generator import GeneratorConfig
    from zhongtai.devtools.generator.model import DEFAULT_START_MS
    from zhongtai.devtools.generator.produce import produce

    n = fresh_names()
    settings = make_settings(flink={"parallelism": parallelism},
                             schema_file=str(SHIPPED.with_name("retail_schema.yaml")))
    assert len(settings.event_schema.prop_checks()) == 10
    report = produce(settings, GeneratorConfig(seed=31 + parallelism, persons=150, events=2_500,
                                               topic_prefix=n.topic_prefix, partitions=2), name=n.tag, progress=False)
    expected = load_expected(report.expected_path)
    t0 = DEFAULT_START_MS + 60_000
    breaking = [
        event_record("x1", "purchase", "ux", t0, price="1.00"),                    # no order_id
        event_record("x2", "login", "ux", t0, method=["sms_code"]),               # a list, not a string
        event_record("x3", "page_view", "ux", t0, store_id={"id": "sh-001"}),      # an object, not a string
    ]
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    for value in breaking:
        p.produce(n.topic_prefix + "extra", value, key=b"x", timestamp=t0)
    assert p.flush(30) == 0
    run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                        redis_prefix=n.prefix, hbase=False, resume=False, job_name=n.job))
    want = dict(expected["stats"])
    for k in ("received", "dlq"):
        want[k] += 3
    for reason in ("missing_field:props.order_id", "wrong_type:props.method", "wrong_type:props.store_id"):
        assert f"dlq:{reason}" not in want  # the generator's own stream never breaks its schema
        want[f"dlq:{reason}"] = 1
    store = RedisStore(settings.redis, prefix=n.prefix)
    try:
        assert store.stats() == want
        assert counter_mismatches(expected["counters"], store.all_counters()) == []
        assert profile_mismatches(expected["profiles"], store.profile) == []
    finally:
        store.delete_prefix()
        store.close()
