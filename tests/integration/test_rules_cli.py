"""``zhongtai rules validate|publish|list|pause|resume|delete`` against the real Kafka (docs/rules.md).

Each test gets fresh control and results topics (``make_settings()``), passed to the CLI through the
``ZT__KAFKA__TOPICS__*`` environment, so every assert is exact. ``--wait`` is answered by a stand-in
for the job's rules operator (:class:`JobStandIn`): it reads the control topic, applies each message
with the job's own pure ``apply_control`` and writes ``ControlResult.to_json()`` with the header
``zt.kind: rule`` to the results topic, as the job (``pipelines/job.py``) does. The Flink job is not run.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from connectors.control import publish, read_topic
from operators.rules.registry import apply_control
from tests.helpers import ROOT as REPO
from tests.helpers import make_settings
from zhongtai import cli
from zhongtai.services.api.rules import RuleSetView, answers, rows

pytestmark = [pytest.mark.stack]

RULES = REPO / "config" / "rules.yaml"
DOC = """\
rules:
  - id: cart_push
    version: {version}
    name: Cart push
    priority: 5
    trigger: {{event: [add_to_cart]}}
    actions:
      - {{channel: push, template: {template}}}
"""
ROW = {"kind": "rule", "id": "cart_push", "version": 1, "status": "active", "trigger": "event:add_to_cart",
       "channels": ["push"], "priority": 5, "name": "Cart push"}


@pytest.fixture
def settings(monkeypatch):
    s = make_settings()
    monkeypatch.setenv("ZT__KAFKA__TOPICS__CONTROL", s.kafka.topics.control)
    monkeypatch.setenv("ZT__KAFKA__TOPICS__CONTROL_RESULTS", s.kafka.topics.control_results)
    return s


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["rules", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def doc(tmp_path: Path, version: int = 1, template: str = "cart_nudge", name: str = "cart.yaml") -> Path:
    p = tmp_path / name
    p.write_text(DOC.format(version=version, template=template), encoding="utf-8")
    return p


def listing(capsys) -> dict:
    code, out, err = run(capsys, "list", "--json")
    assert (code, err) == (0, "")
    return json.loads(out)


def with_cart_push(settings, row: dict) -> list[dict]:
    """The shipped rule set's rows with ``row`` in its place (rules by priority, then id)."""
    initial = rows(RuleSetView(settings).initial)
    at = next(i for i, x in enumerate(initial) if x["kind"] == "rule" and x["priority"] < row["priority"])
    return initial[:at] + [row] + initial[at:]


# ---- validate (offline) --------------------------------------------------------------------------


def test_validate_ok_and_every_error(capsys, tmp_path):
    assert run(capsys, "validate", str(RULES)) == (0, f"{RULES}: ok, 8 rules, 4 patterns, 1 journey\n", "")
    bad = tmp_path / "bad.yaml"
    bad.write_text("""\
rules:
  - id: x
    version: 1
    name: X
    trigger: {event: [register]}
    actions: [{channel: fax, template: t}]
  - id: y
    version: 0
    name: Y
    trigger: {event: [login]}
    priority: high
    actions: [{channel: sms, template: t}]
""", encoding="utf-8")
    code, out, err = run(capsys, "validate", str(RULES), str(bad), str(tmp_path / "missing.yaml"))
    assert code == 1
    assert out == f"{RULES}: ok, 8 rules, 4 patterns, 1 journey\n"
    assert err.splitlines() == [
        (f"{bad}:6:25: rule 'x' at $.rules[0].actions[0].channel: 'fax' is not allowed; use one of email, sms, "
         "push, webhook, coupon"),
        f"{bad}:11:15: rule 'y' at $.rules[1].priority: 'high' is a str; write a integer",
        f"{bad}:8:14: rule 'y' at $.rules[1].version: 0 is below the minimum 1; use 1 or more",
        f"{bad}: 3 problem(s)",
        f"zhongtai rules validate: {tmp_path / 'missing.yaml'}: cannot read it (No such file or directory); check the path",
    ]


# ---- publish / list / pause / resume / delete ----------------------------------------------------


def test_publish_list_pause_resume_delete(settings, capsys, tmp_path):
    control = settings.kafka.topics.control
    first = listing(capsys)
    assert first == {"ruleset_version": 1, "rules_file": str(RULES), "control_topic": control, "applied": 0,
                     "rejected": 0, "items": rows(RuleSetView(settings).initial)}

    path = doc(tmp_path)
    assert run(capsys, "publish", str(path)) == (
        0, f"published batch of 1 (rule cart_push v1) to {control} (partition 0, offset 0)\n", "")
    after = listing(capsys)
    assert (after["ruleset_version"], after["applied"], after["items"]) == (2, 1, with_cart_push(settings, ROW))

    assert run(capsys, "pause", "cart_push") == (
        0, f"published pause rule cart_push to {control} (partition 0, offset 1)\n", "")
    assert listing(capsys)["items"] == with_cart_push(settings, {**ROW, "status": "paused"})
    _, out, _ = run(capsys, "list")
    line = next(x for x in out.splitlines() if " cart_push " in x)
    assert line.split() == ["rule", "cart_push", "1", "paused", "5", "event:add_to_cart", "push"]
    assert out.splitlines()[-1] == (f"rule set version 3: {RULES} + 2 applied / 0 rejected control message(s) "
                                    f"on {control}")

    assert run(capsys, "resume", "cart_push", "--version", "1")[0] == 0
    assert listing(capsys)["items"] == with_cart_push(settings, ROW)

    # a new version replaces the running one
    assert run(capsys, "publish", str(doc(tmp_path, version=2, template="cart_nudge_v2")))[0] == 0
    assert listing(capsys)["items"] == with_cart_push(settings, {**ROW, "version": 2})

    assert run(capsys, "delete", "cart_push") == (
        0, f"published delete rule cart_push to {control} (partition 0, offset 4)\n", "")
    final = listing(capsys)
    assert (final["ruleset_version"], final["applied"], final["items"]) == (
        6, 5, rows(RuleSetView(settings).initial))
    sent = [(r.key, r.json()) for r in read_topic(settings, control)]
    assert sent[1] == (b"rule:cart_push", {"kind": "rule", "op": "pause", "id": "cart_push"})
    assert sent[2] == (b"rule:cart_push", {"kind": "rule", "op": "resume", "id": "cart_push", "version": 1})
    assert sent[0][0] == b"batch:"
    assert sent[0][1]["items"][0]["definition"]["actions"] == [{"channel": "push", "template": "cart_nudge"}]


def test_rejected_before_sending(settings, capsys, tmp_path):
    control = settings.kafka.topics.control
    assert run(capsys, "publish", str(doc(tmp_path)))[0] == 0
    # the same version with another definition is stale: refused, nothing sent
    code, out, err = run(capsys, "publish", str(doc(tmp_path, template="other")))
    assert (code, out) == (1, "")
    assert err == ("zhongtai rules publish: not sent: the job would reject it: item 0 (rule 'cart_push'): stale "
                   "version 1: rule 'cart_push' runs version 1; publish with version 2 or higher; nothing of the "
                   "batch was applied (to send it anyway: --no-check)\n")
    code, out, err = run(capsys, "delete", "nope", "--kind", "pattern")
    assert (code, out, err) == (1, "", ("zhongtai rules delete: not sent: the job would reject it: pattern 'nope' "
                                        "does not exist; check the id with `zhongtai rules list` (to send it anyway: "
                                        "--no-check)\n"))
    code, _, err = run(capsys, "pause", "cart_push", "--version", "7")
    assert code == 1 and "unknown version 7: rule 'cart_push' runs version 1" in err
    assert len(read_topic(settings, control)) == 1
    # --no-check sends it; the fold (like the job) rejects it and counts it
    assert run(capsys, "delete", "nope", "--no-check")[0] == 0
    after = listing(capsys)
    assert (after["applied"], after["rejected"], len(read_topic(settings, control))) == (1, 1, 2)


def test_invalid_document_is_not_published(settings, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DOC.format(version=1, template="t").replace("[add_to_cart]", "add_to_cart"), encoding="utf-8")
    code, out, err = run(capsys, "publish", str(bad))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{bad}:6:22: rule 'cart_push' at $.rules[0].trigger.event: 'add_to_cart' is a str; write a array",
        f"zhongtai rules publish: {bad}: not published, fix the 1 problem(s) above first",
    ]
    assert read_topic(settings, settings.kafka.topics.control) == []


def test_list_skips_what_the_job_skips(settings, capsys, tmp_path):
    """Other kinds (identity, experiment, tag) and non-JSON records on the control topic are not the
    rules operator's: the job's SQL drops them, and so does the fold."""
    from confluent_kafka import Producer

    control = settings.kafka.topics.control
    assert run(capsys, "publish", str(doc(tmp_path)))[0] == 0
    publish(settings, [{"kind": "identity", "op": "block", "identifier": "device_id:kiosk", "version": 1},
                       {"kind": "experiment", "op": "stop", "key": "x", "version": 1}])
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    p.produce(control, value=b"not json")
    p.produce(control, value=b"[1, 2]")
    p.flush(10)
    got = listing(capsys)
    assert (got["applied"], got["rejected"], got["items"]) == (1, 0, with_cart_push(settings, ROW))


# ---- --wait: the job's answer ----------------------------------------------------------------------


class JobStandIn(threading.Thread):
    """The job's rules operator without Flink: control topic → apply_control → results topic."""

    def __init__(self, settings, ruleset) -> None:
        super().__init__(daemon=True)
        self.settings, self.rs, self.stop = settings, ruleset, threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition

        s = self.settings
        c = Consumer({"bootstrap.servers": s.kafka.bootstrap, "group.id": "standin", "enable.auto.commit": False})
        c.assign([TopicPartition(s.kafka.topics.control, 0, 0)])
        p = Producer({"bootstrap.servers": s.kafka.bootstrap})
        n = 0
        while not self.stop.is_set():
            for m in c.consume(10, timeout=0.2):
                if m.error():
                    continue
                self.rs, res = apply_control(self.rs, json.loads(m.value()))
                # results land on any partition (the job's sink has no key): alternate to show the order holds
                p.produce(s.kafka.topics.control_results, value=json.dumps(res.to_json()).encode(),
                          headers={"zt.kind": b"rule"}, partition=n % 2)
                n += 1
                p.flush(10)
        c.close()


def test_wait_prints_the_jobs_answer(settings, capsys, tmp_path):
    from connectors.kafka_admin import create_topics

    control, results = settings.kafka.topics.control, settings.kafka.topics.control_results
    create_topics(settings, [control], partitions=1)
    create_topics(settings, [results], partitions=2)
    # an identity result on the same topic is not ours
    publish(settings, [{"kind": "tag", "op": "noop"}], topic=results)
    job = JobStandIn(settings, RuleSetView(settings).initial)
    job.start()
    try:
        assert run(capsys, "publish", str(doc(tmp_path)), "--wait", "20") == (
            0, (f"published batch of 1 (rule cart_push v1) to {control} (partition 0, offset 0)\n"
                "applied: rule set version 2\n"), "")
        assert run(capsys, "pause", "cart_push", "--wait", "20")[1].splitlines()[-1] == "applied: rule set version 3"
        # sent without the check, the job rejects it: exit 1 with its reason
        code, out, err = run(capsys, "resume", "cart_push", "--version", "9", "--no-check", "--wait", "20")
        assert (code, err) == (1, ("zhongtai rules resume: rejected by the job: unknown version 9: rule 'cart_push' "
                                   "runs version 1; resume names the running version (or leave version out)\n"))
        code, out, _ = run(capsys, "list", "--results")
        line = next(x for x in out.splitlines() if " cart_push " in x)
        assert line.split()[:4] == ["rule", "cart_push", "1", "paused"]
        assert line.endswith("resume v9 rejected: unknown version 9: rule 'cart_push' runs version 1; resume names "
                             "the running version (or leave version out)")
        got = {i["id"]: i["last_result"] for i in listing_results(capsys)["items"]}
        assert got["cart_push"] == {"ok": False, "op": "resume", "version": 9, "applied_at_ms": None,
                                    "reason": "unknown version 9: rule 'cart_push' runs version 1; resume names the "
                                              "running version (or leave version out)"}
        assert got["welcome_register"] is None
    finally:
        job.stop.set()
        job.join(10)


def listing_results(capsys) -> dict:
    code, out, _ = run(capsys, "list", "--json", "--results")
    assert code == 0
    return json.loads(out)


def test_wait_without_a_job_says_what_to_check(settings, capsys, tmp_path):
    code, out, err = run(capsys, "publish", str(doc(tmp_path)), "--wait", "2")
    control, results = settings.kafka.topics.control, settings.kafka.topics.control_results
    assert code == 1
    assert out == f"published batch of 1 (rule cart_push v1) to {control} (partition 0, offset 0)\n"
    assert err == (f"zhongtai rules publish: no result on {results} within 2 s; the message is on {control} and the "
                   "job applies it when it reads it. Is the job running with the strategy engine (`zhongtai run "
                   "--rules`) against this control topic? Check with `zhongtai rules list --results` later\n")


# ---- pure: which result answers which message -------------------------------------------------------


def test_answers_matches_kind_op_id_and_batch_items():
    pause = {"kind": "rule", "op": "pause", "id": "a"}
    assert answers(pause, {"kind": "rule", "op": "pause", "id": "a", "ok": False})
    assert not answers(pause, {"kind": "rule", "op": "pause", "id": "b", "ok": True})
    assert not answers(pause, {"kind": "pattern", "op": "pause", "id": "a", "ok": True})
    batch = {"kind": "batch", "items": [{"kind": "rule", "id": "a"}, {"kind": "pattern", "id": "p"}]}
    ok = {"kind": "batch", "ok": True, "items": [{"kind": "rule", "id": "a"}, {"kind": "pattern", "id": "p"}]}
    assert answers(batch, ok)
    assert not answers(batch, {**ok, "items": ok["items"][:1]})  # another batch's answer
    assert answers(batch, {"kind": "batch", "ok": False, "items": []})
    assert not answers(batch, pause)


def test_list_from_another_rules_file_and_a_missing_one(settings, capsys, tmp_path):
    path = doc(tmp_path, name="start.yaml")
    got = json.loads(run(capsys, "list", "--json", "--rules-file", str(path))[1])
    assert (got["rules_file"], got["items"]) == (str(path), [ROW])
    missing = tmp_path / "nope.yaml"
    assert run(capsys, "list", "--rules-file", str(missing)) == (
        2, "", (f"zhongtai rules list: the rules file the job starts from, {missing}, cannot be read (No such file "
                "or directory); give it with --rules-file\n"))
