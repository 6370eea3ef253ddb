"""``namespace`` (``zhongtai --namespace NAME``): every shared name of a run in its own namespace.

Pure: the derivation (two namespaces share no name and none is a prefix of another's; the events pattern
matches exactly the namespace's topics; a value the user set is qualified too; invalid names are refused
with the rule) and the command line (the flag before or after any verb). Through the job: two namespaces
run ``zhongtai run --drain`` on the real stack, and each one's topics, consumer groups, Redis keys, HBase
tables and checkpoint folder are its own, with exact counts.
"""

from __future__ import annotations

import re
import uuid

import pytest

from config import ConfigError, load_settings
from config.namespace import NAMED_KEYS, apply_namespace, check_namespace, qualify, qualify_pattern
from config.settings import DEFAULTS_FILE, KafkaTopics, Settings, settings_from_json, settings_to_json
from zhongtai.cli import build_parser, main
from zhongtai.names import produced_topics, shared_names


def _names(namespace: str) -> dict[str, str]:
    return shared_names(load_settings(env={}, overrides={"namespace": namespace}))


def _span(role: str, name: str) -> str:
    """What a name reaches: Redis keys ``<prefix>:...``, transactional ids ``<prefix>-<subtask>-<n>``, files
    under a folder ``<folder>/...``; any other name only itself (a topic, a group, a table, a job)."""
    if role == "redis.prefix":
        return name + ":"
    if role.startswith("txn."):
        return name + "-"
    if role in ("flink.checkpoints", "flink.savepoints"):
        return name + "/"
    return name + "\0"


def _prefix_collisions(ours: dict[str, str], theirs: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs (our role, their role) where what one name reaches overlaps what the other reaches."""
    spans = [(r, _span(r, a), q, _span(q, b)) for r, a in ours.items() for q, b in theirs.items()]
    return [(r, q) for r, a, q, b in spans if a.startswith(b) or b.startswith(a)]


@pytest.mark.parametrize("one,other", [("", "a"), ("a", "b"), ("a", "a-b"), ("", "zt"), ("events", ""),
                                       ("zhongtai-events", "")])
def test_two_namespaces_share_no_name_and_no_prefix(one: str, other: str) -> None:
    ours, theirs = _names(one), _names(other)
    assert ours.keys() == theirs.keys()
    assert set(ours.values()).isdisjoint(theirs.values())
    assert _prefix_collisions(ours, theirs) == []


def test_without_a_namespace_every_name_is_as_configured() -> None:
    names = _names("")
    assert load_settings(env={}) == Settings()  # defaults.yaml says what the model says
    assert (names["pattern.events"], names["topic.dlq"], names["topic.store_log"]) == (
        r"zt\.events\..*", "zt.dlq", "zt.store.zt-job")
    assert (names["group.events"], names["group.applier"], names["group.workers"]) == ("zt-job", "zt-job-store",
                                                                                       "zt-workers")
    assert (names["txn.dlq"], names["txn.worker.email"]) == ("zhongtai-events-dlq", "zt-zt-workers-email-0")
    assert (names["redis.prefix"], names["hbase.profile"], names["flink.job_name"]) == ("zt", "zt_profile",
                                                                                       "zhongtai-events")


def test_every_name_carries_the_namespace() -> None:
    checkpoints = load_settings(env={}).checkpoint_url().rstrip("/") + "/"
    for role, name in _names("a").items():
        name = name.removeprefix(checkpoints)
        assert name.startswith("a.") or name.startswith(r"a\.(?:"), (role, name)


def test_the_negative_control_a_namespace_that_qualifies_nothing_shares_everything(monkeypatch) -> None:
    """With the qualification switched off the checks above fail: the names of two namespaces coincide."""
    import config.namespace
    import config.settings

    for module in (config.namespace, config.settings):
        monkeypatch.setattr(module, "qualify", lambda namespace, name: name)
        monkeypatch.setattr(module, "qualify_pattern", lambda namespace, pattern: pattern)
    ours, theirs = _names("a"), _names("b")
    assert set(ours.values()) == set(theirs.values())
    assert len(_prefix_collisions(ours, theirs)) >= len(ours)


def test_the_events_pattern_matches_exactly_the_namespaces_topics() -> None:
    topics = {ns: produced_topics(load_settings(env={}, overrides={"namespace": ns})) for ns in ("", "a", "a-b")}
    for ns in topics:
        pattern = re.compile(load_settings(env={}, overrides={"namespace": ns}).kafka.topics.events)
        for other, names in topics.items():
            assert [bool(pattern.fullmatch(t)) for t in names] == [ns == other] * len(names), (ns, other)
    # a pattern with anchors keeps its meaning inside the namespace
    assert qualify_pattern("a", r"^orders\..*$") == r"a\.(?:orders\..*)"
    assert re.fullmatch(qualify_pattern("a", r"^orders\..*$"), "a.orders.x")
    assert not re.fullmatch(qualify_pattern("a", r"^orders\..*$"), "orders.x")


def test_a_value_the_user_sets_is_the_base_the_namespace_qualifies(tmp_path) -> None:
    """One configuration file serves every namespace: what it sets is qualified, never used bare."""
    cfg = tmp_path / "prod.yaml"
    cfg.write_text("redis: {prefix: legacy}\nhbase: {namespace: prod}\nkafka:\n  consumer_group: orders\n"
                   "  topics: {events: 'orders\\..*', dlq: orders.dlq}\n")
    s = load_settings(cfg, env={"ZT__NAMESPACE": "staging", "ZT__WORKER__GROUP": "senders"})
    assert (s.namespace, s.redis.prefix, s.hbase.namespace, s.kafka.consumer_group, s.worker.group) == (
        "staging", "staging.legacy", "staging.prod", "staging.orders", "staging.senders")
    assert (s.kafka.topics.events, s.kafka.topics.dlq, s.kafka.topics.control) == (
        r"staging\.(?:orders\..*)", "staging.orders.dlq", "staging.zt.control")
    # without a namespace the same file is used as written
    bare = load_settings(cfg, env={})
    assert (bare.redis.prefix, bare.kafka.topics.dlq) == ("legacy", "orders.dlq")


def test_the_namespace_comes_from_the_file_the_environment_or_the_flag(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("namespace: file\n")
    assert load_settings(cfg, env={}).redis.prefix == "file.zt"
    assert load_settings(cfg, env={"ZT__NAMESPACE": "env"}).redis.prefix == "env.zt"
    assert load_settings(cfg, env={"ZT__NAMESPACE": "env"}, overrides={"namespace": "flag"}).redis.prefix == "flag.zt"
    assert load_settings(cfg, env={"ZT__NAMESPACE": ""}).redis.prefix == "zt"  # empty: none


def test_settings_shipped_to_the_job_are_not_qualified_twice() -> None:
    s = load_settings(env={}, overrides={"namespace": "a"})
    assert settings_from_json(settings_to_json(s)) == s


@pytest.mark.parametrize("name", ["A", "a.b", "a_b", "a:b", "a{b}", "-a", "a-", "a b", "é", "x" * 33])
def test_an_invalid_namespace_is_refused_with_the_rule(name: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(env={}, overrides={"namespace": name})
    msg = str(e.value)
    assert f"namespace {name!r} is not allowed: use 1-32 lower-case letters, digits and '-'" in msg
    assert "Kafka topic" in msg and "HBase table" in msg and "Redis keys" in msg


@pytest.mark.parametrize("name", ["a", "0", "a-b", "team-7", "x" * 32])
def test_valid_namespaces(name: str) -> None:
    assert check_namespace(name) == name
    assert load_settings(env={}, overrides={"namespace": name}).kafka.topics.dlq == f"{name}.zt.dlq"


def test_every_named_key_is_qualified() -> None:
    plain = load_settings(env={}).model_dump()
    named = apply_namespace({**plain, "namespace": "n"})
    for path, key in NAMED_KEYS:
        a, b = plain, named
        for part in path:
            a, b = a[part], b[part]
        assert b[key] == qualify("n", a[key]), (path, key)
    # every topic key of kafka.topics is a name or the pattern
    assert {k for p, k in NAMED_KEYS if p == ("kafka", "topics")} | {"events"} == set(KafkaTopics.model_fields)


def test_defaults_yaml_documents_every_topic_key_and_the_namespace() -> None:
    lines = DEFAULTS_FILE.read_text(encoding="utf-8").splitlines()
    keys = ["namespace", *(f"    {k}" for k in KafkaTopics.model_fields)]
    for key in keys:
        at = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key}:"))
        assert lines[at - 1].lstrip().startswith("#"), f"{key.strip()} has no comment in defaults.yaml"


@pytest.mark.parametrize("argv", [
    ["--namespace", "a", "names"],
    ["names", "--namespace", "a"],
    ["profile", "get", "user_id:u1", "--namespace", "a"],
    ["rules", "list", "--namespace", "a"],
    ["worker", "--channel", "email", "--namespace", "a"],
    ["stack", "up", "--namespace", "a"],
])
def test_the_flag_goes_before_or_after_any_verb(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).namespace == "a"


def test_without_the_flag_the_configured_namespace_stays() -> None:
    assert build_parser().parse_args(["names"]).namespace is None


def test_zhongtai_names_prints_the_namespaces_names(capsys, monkeypatch) -> None:
    import json

    monkeypatch.delenv("ZT__NAMESPACE", raising=False)
    assert main(["names", "--namespace", "a", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == shared_names(load_settings(overrides={"namespace": "a"}))
    assert main(["--namespace", "A.b", "names"]) == 2
    assert "namespace 'A.b' is not allowed" in capsys.readouterr().err


def test_stack_up_makes_the_namespaces_tables(monkeypatch) -> None:
    """``zhongtai --namespace a stack up`` hands the namespaced settings to the stack (which creates the
    HBase tables of ``hbase.namespace``); the stack itself (its run dir) is shared."""
    import zhongtai.devtools.stack

    seen: list[Settings] = []
    monkeypatch.setattr(zhongtai.devtools.stack, "up", lambda s, **kw: seen.append(s))
    monkeypatch.delenv("ZT__NAMESPACE", raising=False)
    assert main(["--namespace", "a", "stack", "up", "hbase"]) == 0
    assert seen[0].hbase.namespace == "a.zt" and seen[0].run_dir == load_settings(env={}).run_dir


def test_stop_in_a_namespace_stops_that_namespaces_job(monkeypatch, capsys) -> None:
    """On a cluster that runs several namespaces' jobs, ``zhongtai --namespace a stop`` looks for a's job
    (without a namespace: the one running job, as before) and puts the savepoint in a's folder."""
    import zhongtai.jobs.submit

    seen: list[tuple[str | None, str]] = []

    def find_job(settings: Settings, job: str | None) -> str:
        seen.append((job, ""))
        return "jid"

    def stop_with_savepoint(settings: Settings, job_id: str, directory: str, **kw: object) -> str:
        seen.append((None, directory))
        return directory + "/sp-1"

    monkeypatch.setattr(zhongtai.jobs.submit, "find_job", find_job)
    monkeypatch.setattr(zhongtai.jobs.submit, "stop_with_savepoint", stop_with_savepoint)
    monkeypatch.delenv("ZT__NAMESPACE", raising=False)
    assert main(["--namespace", "a", "stop"]) == 0
    assert main(["stop"]) == 0
    ck = load_settings().checkpoint_url()
    assert seen == [("a.zhongtai-events", ""), (None, f"{ck}/a.savepoints"), (None, ""), (None, f"{ck}/savepoints")]
    assert f"continue with: zhongtai --namespace a submit --from-savepoint {ck}/a.savepoints/sp-1" in \
        capsys.readouterr().err


def test_produce_writes_to_the_namespaces_topics(monkeypatch) -> None:
    import zhongtai.devtools.generator.produce

    seen = []
    monkeypatch.setattr(zhongtai.devtools.generator.produce, "produce", lambda s, cfg, name, progress: seen.append((cfg, name)))
    monkeypatch.delenv("ZT__NAMESPACE", raising=False)
    assert main(["produce", "--namespace", "a", "--events", "10", "--quiet"]) == 0
    cfg, name = seen[0]
    assert cfg.topics() == produced_topics(load_settings(overrides={"namespace": "a"}))
    assert name == "a.gen-s42-n10"  # its expected-results file too


def test_the_container_bootstrap_lays_out_the_namespaces_topics() -> None:
    """``docker/bootstrap.py init`` with ``ZT__NAMESPACE`` creates the namespace's topics (and tables)."""
    from tests.unit.test_deploy_files import bootstrap_module

    layout = bootstrap_module().topic_layout(load_settings(env={"ZT__NAMESPACE": "a"}))
    names = _names("a")
    assert set(layout) <= set(names.values()) and names["topic.store_log"] in layout
    assert layout[names["topic.control"]] == 1


@pytest.mark.stack
def test_stack_up_creates_a_namespaces_tables() -> None:
    """What ``zhongtai --namespace NAME stack up`` does on a running stack: the namespace's HBase tables."""
    from zhongtai.devtools.stack import hbase

    ns = f"n{uuid.uuid4().hex[:8]}"
    s = load_settings(overrides={"namespace": ns})
    tables = [f"{ns}.zt_{t}" for t in ("actions", "identity", "offers", "prices", "profile")]
    assert sorted(hbase.ensure_tables(s)) == tables
    hbase.wait_tables_serving(s, 120)
    assert hbase.ensure_tables(s) == []  # idempotent
    assert _tables_with(s, ns) == set(tables)


# ---- through the job ----------------------------------------------------------------------------
def _tables_with(settings: Settings, tag: str) -> set[str]:
    import happybase

    conn = happybase.Connection(settings.hbase.host, settings.hbase.port)
    try:
        return {t.decode() for t in conn.tables() if tag in t.decode()}
    finally:
        conn.close()


def _groups_with(settings: Settings, tag: str) -> set[str]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    listed = admin.list_consumer_groups(request_timeout=10).result()
    return {g.group_id for g in listed.valid if tag in g.group_id}


@pytest.mark.stack
@pytest.mark.flink
def test_two_namespaces_run_the_job_apart(tmp_path, monkeypatch) -> None:
    from connectors.hbase_store import TABLES, HBaseStore, derive_profile_hash
    from connectors.kafka_admin import list_topics, matching_topics
    from connectors.redis_store import RedisStore
    from operators.profile_windows import evaluate
    from tests.helpers import load_expected, profile_mismatches
    from zhongtai.devtools.generator import GeneratorConfig, fault_rates
    from zhongtai.devtools.generator.produce import produce

    tag = uuid.uuid4().hex[:8]
    spaces = {f"n{tag}-a": (11, 240), f"n{tag}-b": (12, 360)}  # seed, events: different totals
    monkeypatch.delenv("ZT__NAMESPACE", raising=False)
    monkeypatch.setenv("ZT__FLINK__CHECKPOINT_DIR", tmp_path.as_uri())
    settings = {ns: load_settings(overrides={"namespace": ns}) for ns in spaces}
    expected = {}
    for ns, (seed, events) in spaces.items():
        s = settings[ns]
        report = produce(s, GeneratorConfig(seed=seed, persons=40, events=events, partitions=2,
                                            topic_prefix=s.in_namespace("zt.events."),
                                            faults=fault_rates(total=0.2)), name=ns, progress=False)
        expected[ns] = load_expected(report.expected_path)
    # one namespace named before the verb, the other after it: both are the same flag
    assert main(["--namespace", f"n{tag}-a", "run", "--drain", "--quiet"]) == 0
    assert main(["run", "--drain", "--quiet", "--namespace", f"n{tag}-b"]) == 0

    topics = {t for t in list_topics(settings[f"n{tag}-a"]) if tag in t}
    tables = _tables_with(settings[f"n{tag}-a"], tag)
    groups = _groups_with(settings[f"n{tag}-a"], tag)
    stores = {ns: RedisStore(s.redis) for ns, s in settings.items()}
    try:
        for ns, s in settings.items():
            names = shared_names(s)
            ours = {t for t in topics if t.startswith(f"{ns}.")}
            # the topics the run made are the namespace's, by the names the settings derive (the job creates
            # its control topics and store log; its sinks' topics appear with their first record)
            made = {names[r] for r in ("topic.produce.web", "topic.produce.app", "topic.produce.offline",
                                       "topic.control", "topic.control_results", "topic.store_log")}
            assert made <= ours <= set(names.values())
            assert names["topic.dlq"] in ours and expected[ns]["stats"]["dlq"] > 0  # the stream has bad records
            assert sorted(matching_topics(s, s.kafka.topics.events)) == sorted(produced_topics(s))
            assert names["group.applier"] in groups
            assert {g for g in groups if g.startswith(f"{ns}.")} <= set(names.values())
            assert {t for t in tables if t.startswith(f"{ns}.")} == {names[f"hbase.{t}"] for t in TABLES}
            # exact counts, read through the namespace's prefix and tables
            assert stores[ns].stats() == expected[ns]["stats"]
            assert sorted(stores[ns].persons()) == sorted(expected[ns]["profiles"])
            assert profile_mismatches(expected[ns]["profiles"], stores[ns].profile) == []
            hb = HBaseStore(s.hbase)
            try:
                assert profile_mismatches(expected[ns]["profiles"],
                                          lambda p, hb=hb: evaluate(derive_profile_hash(hb.profile_buckets(p)))) == []
            finally:
                hb.close()
        # nothing of a namespace is outside it: every tagged topic, group and table belongs to one
        assert {t.split(".", 1)[0] for t in topics | groups | tables} == set(spaces)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(s.flink.job_name for s in settings.values())
        # negative control: a pattern that is not anchored to a namespace reads both runs' topics, and the
        # other namespace's totals are not this one's (so a shared name would have failed the checks above)
        both = matching_topics(settings[f"n{tag}-a"], rf".*n{tag}-.*\.zt\.events\..*")
        assert sorted(both) == sorted(produced_topics(settings[f"n{tag}-a"]) + produced_topics(settings[f"n{tag}-b"]))
        assert stores[f"n{tag}-b"].stats() != expected[f"n{tag}-a"]["stats"]
    finally:
        for store in stores.values():
            store.delete_prefix()
            store.close()
