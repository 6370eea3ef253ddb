"""The visual builder in a real browser, through the real job (issue 17).

In headless Chromium (Debian's package) a person builds the source document's flow on the canvas by drag
and drop — register → welcome e-mail now → wait up to 1 day for a login → not activated: SMS → exit;
a purchase ends the journey — sees an expression error underlined on its token, checks the diff, and
publishes through ``zhongtai api`` (a real process on the real Kafka). Then:

* the control topic holds exactly the definitions config/rules.yaml ships for that journey (same steps,
  same two rules): the builder has no format of its own;
* publishing a change under the running version (someone else published first) is refused (409, stale)
  and nothing more is sent;
* the real job, started from a rules file WITHOUT the journey and reading that control topic, emits what
  the YAML version does: the welcome e-mail for every registered person, the SMS one day later only for
  the one who neither logged in nor bought (and granted SMS consent).

Screenshots go to .zt/screenshots/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest
import yaml
from confluent_kafka import Producer
from playwright.sync_api import Page, expect

from connectors.control import read_topic
from connectors.kafka_admin import create_topics
from connectors.redis_store import RedisStore
from operators.identity.model import person_id
from tests.browser import chromium_page
from tests.helpers import ROOT, event_record, free_port, fresh_names, make_settings, read_topics, wait_until
from zhongtai.jobs.runner import RunOptions, run_events_job

pytestmark = [pytest.mark.stack, pytest.mark.flink]

SCREENSHOTS = ROOT / ".zt" / "screenshots"
DAY = 86_400_000
T0 = 1_767_261_600_000  # 2026-01-01T10:00Z: outside the SMS quiet hours (21:00-09:00 UTC)
#: The job starts from the policy alone: the journey and its rules come only from the builder.
RULES = """
policy:
  default_timezone: UTC
  consent: {email: opt_out, sms: opt_in, push: opt_out, webhook: none, coupon: none}
"""
ROUTED = ("register", "login", "purchase")
#: Where each node is dropped on the canvas (x, y of its centre, relative to the canvas).
PLACES = {"entry": (90, 90), "send": (270, 90), "wait_for": (450, 90), "end": (640, 60)}


def shipped() -> tuple[dict, dict]:
    doc = yaml.safe_load((ROOT / "config" / "rules.yaml").read_text(encoding="utf-8"))
    [journey] = [j for j in doc["journeys"] if j["id"] == "onboarding"]
    return journey, {r["id"]: r for r in doc["rules"] if r["id"].startswith("onboarding_")}


def drop(page: Page, kind: str, x: int, y: int) -> None:
    page.get_by_test_id(f"palette-{kind}").drag_to(page.get_by_test_id("canvas"), target_position={"x": x, "y": y})


def edit(page: Page, node: str, **fields: str) -> None:
    """Select ``node`` and type each field (test ids ``f-<name>``, ``_`` written as ``-``)."""
    page.get_by_test_id(f"node-{node}").click()
    for name, value in fields.items():
        page.get_by_test_id("f-" + name.replace("_", "-")).fill(value)


def connect(page: Page, node: str, port: str, to: str) -> None:
    page.get_by_test_id(f"port-{node}-{port}").drag_to(page.get_by_test_id(f"node-{to}"))
    expect(page.get_by_test_id(f"edge-{node}-{port}")).to_have_count(1)


def build_onboarding(page: Page) -> None:
    page.get_by_test_id("journey-id").fill("onboarding")
    page.get_by_test_id("journey-name").fill("Welcome and activation")
    page.get_by_test_id("journey-campaign").fill("onboarding")
    page.get_by_test_id("journey-exit").fill("purchase")
    drop(page, "entry", *PLACES["entry"])
    edit(page, "entry", event="register")
    drop(page, "send", *PLACES["send"])
    edit(page, "send1", id="welcome", channel="email", template="welcome_email", rule_id="onboarding_welcome_email",
         rule_name="Onboarding: welcome e-mail")
    drop(page, "wait_for", *PLACES["wait_for"])
    edit(page, "wait_for1", id="wait_login", event="login", within="1d")
    drop(page, "end", *PLACES["end"])
    edit(page, "end1", id="activated")
    drop(page, "send", 640, 230)
    edit(page, "send1", id="nudge", channel="sms", template="activation_reminder", rule_id="onboarding_activation_sms",
         rule_name="Onboarding: not activated after a day", qh_start="21:00", qh_end="09:00", qh_mode="hold")
    drop(page, "end", 825, 230)
    edit(page, "end1", id="done")
    connect(page, "entry", "next", "welcome")
    connect(page, "welcome", "next", "wait_login")
    connect(page, "wait_login", "on_event", "activated")
    connect(page, "wait_login", "on_timeout", "nudge")
    connect(page, "nudge", "next", "done")


def start_api(settings, prefix: str, rules_file: str, config: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZT__KAFKA__TOPICS__CONTROL": settings.kafka.topics.control,
           "ZT__KAFKA__TOPICS__CONTROL_RESULTS": settings.kafka.topics.control_results}
    proc = subprocess.Popen([sys.executable, "-m", "zhongtai.cli", "--config", config, "api", "--port", str(port),
                             "--prefix", prefix, "--rules-file", rules_file], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/builder", timeout=1) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"zhongtai api did not start on {base}:\n{out}") from None
            time.sleep(0.3)


def test_build_publish_and_run_the_onboarding_flow(tmp_path) -> None:
    # the event types the journey needs are routed to the engine from the start (job.rules_event_types): the
    # rules file has no rule that uses them
    settings = make_settings(flink={"parallelism": 1}, job={"rules_event_types": ROUTED})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"job": {"rules_event_types": list(ROUTED)}}), encoding="utf-8")
    n = fresh_names()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    prefix = f"zt.t{n.tag}.actions."
    create_topics(settings, [n.topic_prefix + "app"])  # before the job starts: its pattern sees the topic at once
    # the job runs from the start (without the journey); the builder's publish reaches it on the control topic
    client = run_events_job(settings, RunOptions(
        bounded=False, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq, redis_prefix=n.prefix,
        hbase=False, resume=False, job_name=n.job, rules=True, rules_file=str(rules), actions_prefix=prefix,
        experiments=False, attribution=False), wait=False)
    try:
        proc, base = start_api(settings, n.prefix, str(rules), str(config))
        errors: list[str] = []
        try:
            with chromium_page(width=1500, height=950) as page:
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(base + "/builder")
                build_onboarding(page)
                # an expression error is underlined on its token; the fixed condition is accepted
                edit(page, "nudge", condition="profile.gmv = 100")
                page.get_by_test_id("f-condition").blur()
                expect(page.get_by_test_id("expr-token")).to_have_text("=")
                page.screenshot(path=str(SCREENSHOTS / "builder-expression-error.png"))
                page.get_by_test_id("f-condition").fill("")
                page.get_by_test_id("check").click()
                expect(page.get_by_test_id("diff-journey-onboarding")).to_contain_text("journey onboarding: new")
                expect(page.get_by_test_id("diff-rule-onboarding_activation_sms")).to_contain_text("new")
                expect(page.get_by_test_id("warning")).to_have_count(0)  # every type it waits on is routed
                page.get_by_test_id("publish").click()
                expect(page.get_by_test_id("publish-result")).to_contain_text(
                    "published journey onboarding v1, rule onboarding_welcome_email v1, "
                    "rule onboarding_activation_sms v1 as ", timeout=20_000)
                expect(page.get_by_test_id("row-journey-onboarding")).to_contain_text("journey onboarding v1")
                page.screenshot(path=str(SCREENSHOTS / "builder-onboarding-published.png"), full_page=True)
                # a changed definition under the version already running (as when another person published
                # first): the job would reject it as stale, so nothing is sent
                edit(page, "nudge", template="activation_reminder_v2")
                page.get_by_test_id("publish").click()
                expect(page.get_by_test_id("publish-result")).to_contain_text("HTTP 409", timeout=20_000)
                assert errors == []
        finally:
            proc.terminate()
            proc.wait(timeout=15)

        # exactly the shipped definitions went to the control topic, in one batch
        [record] = read_topic(settings, settings.kafka.topics.control)
        msg = record.json()
        assert msg["kind"] == "batch"
        defs = {(i["kind"], i["id"]): i["definition"] for i in msg["items"]}
        journey, ship_rules = shipped()
        sent_journey = defs.pop(("journey", "onboarding"))
        assert {s["id"]: s for s in sent_journey["steps"]} == {s["id"]: s for s in journey["steps"]}
        assert sent_journey["steps"][0] == journey["steps"][0]
        assert ({k: v for k, v in sent_journey.items() if k != "steps"}
                == {k: v for k, v in journey.items() if k != "steps"})
        assert {rid: d for (_, rid), d in defs.items()} == ship_rules

        # the running job installed it ...
        def installed() -> list[dict]:
            recs = [orjson.loads(r.value()) for r in read_topics(settings, [settings.kafka.topics.control_results],
                                                                   idle_polls=1)]
            return [r for r in recs if r.get("kind") == "batch" and r.get("ok")]

        wait_until("the job's result for the builder's batch", installed, timeout=300)
        # ... and runs it: a registers, grants SMS and does nothing else; b logs in within the day; c buys
        p = Producer({"bootstrap.servers": settings.kafka.bootstrap})
        for value in [
            event_record("a1", "register", "ua", T0),
            event_record("a2", "consent", "ua", T0, channel="sms", granted=True),
            event_record("b1", "register", "ub", T0), event_record("b2", "login", "ub", T0 + 2 * 3_600_000),
            event_record("c1", "register", "uc", T0), event_record("c2", "consent", "uc", T0, channel="sms", granted=True),
            event_record("c3", "purchase", "uc", T0 + 3_600_000, price="20.00"),
            event_record("z1", "page_view", "uz", T0 + DAY + 120_000),  # moves event time past the day
        ]:
            e = orjson.loads(value)
            p.produce(n.topic_prefix + "app", value, key=e["ids"]["user_id"].encode(), timestamp=e["ts"])
        assert p.flush(30) == 0
        pa, pb, pc = (person_id(f"user_id:{u}") for u in ("ua", "ub", "uc"))
        want = sorted([(pa, "onboarding_welcome_email", "email", T0), (pa, "onboarding_activation_sms", "sms", T0 + DAY),
                       (pb, "onboarding_welcome_email", "email", T0), (pc, "onboarding_welcome_email", "email", T0)])

        def emitted() -> list[tuple]:
            recs = read_topics(settings, [prefix + c for c in ("email", "sms")], idle_polls=1)
            return sorted((a["person_id"], a["rule_id"], a["channel"], a["ts_ms"])
                          for a in (orjson.loads(m.value()) for m in recs))

        wait_until("the journey's four actions", lambda: len(emitted()) >= len(want), timeout=180, show=emitted)
        time.sleep(3)  # nothing more may follow
        assert emitted() == want
    finally:
        client.cancel().result()
        store = RedisStore(settings.redis, prefix=n.prefix)
        store.delete_prefix()
        store.close()
