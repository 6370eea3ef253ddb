"""The REST API (zhongtai/services/api/app.py) against the real Redis and Kafka (docs/api.md).

Profiles are written with the job's own writer (``RedisStore.write`` of store rows) under a fresh key
prefix; rules go to a fresh control topic (``make_settings()``); experiments are written with the
job's ``RedisExperiments``. Requests go through Starlette's TestClient, and once through a real
``zhongtai api`` process (uvicorn) on a free port. The Flink job is not needed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal

import httpx
import pytest
from starlette.testclient import TestClient

from connectors.control import read_topic
from connectors.redis_experiments import ExperimentRow, RedisExperiments
from connectors.redis_store import RedisStore, StoreRow
from operators.experiments.definitions import control_message, parse_definitions
from tests.helpers import ROOT as REPO
from tests.helpers import free_port, make_settings
from zhongtai.services.api.app import create_app
from zhongtai.services.api.rules import RuleSetView, rows
from zhongtai.services.profiles import person_key

pytestmark = [pytest.mark.stack]

PID = "p0123456789abcdef"
MINUTE = 29_000_000  # epoch minute 2025-02-19 21:20 UTC
DOC = """
rules:
  - id: cart_push
    version: 1
    name: Cart push
    priority: 5
    trigger: {event: [add_to_cart]}
    actions:
      - {channel: push, template: cart_nudge}
"""


def _row(kind: str, key: str, bucket: int = 0, s1: str | None = None, *counts: int, amount: str = "0",
         ts: tuple[int, int, int] = (0, 0, 0)) -> StoreRow:
    n = (*counts, 0, 0, 0, 0, 0)[:5]
    return StoreRow(kind, key, bucket, *n, Decimal(amount), *ts, s1)


@pytest.fixture
def settings():
    return make_settings()


@pytest.fixture
def prefix(settings):
    p = f"tapi{uuid.uuid4().hex[:8]}"
    yield p
    RedisStore(settings.redis, prefix=p).delete_prefix()


@pytest.fixture
def person(settings, prefix):
    """One person written the way the job writes: two identifiers, one minute bucket, one tag."""
    phone = person_key(settings, "phone:+86 138 0000 0000")
    t0 = MINUTE * 60_000
    store = RedisStore(settings.redis, prefix=prefix)
    try:
        store.write([
            _row("i", phone, s1=PID),
            _row("i", "user_id:u42", s1=PID),
            _row("p", PID, MINUTE, None, 3, 1, 1, 5, amount="12.34", ts=(t0 + 1000, t0 + 50_000, t0 + 40_000)),
            _row("t", PID, t0, "high_value"),
        ])
    finally:
        store.close()
    return phone


PROFILE = {
    "first_seen": MINUTE * 60_000 + 1000, "last_seen": MINUTE * 60_000 + 50_000, "events": 5, "views": 3,
    "carts": 1, "purchases": 1, "gmv": "12.34", "views_1h": 3, "views_24h": 3, "views_7d": 3, "carts_7d": 1,
    "purchases_30d": 1, "gmv_30d": "12.34", "purchases_90d": 1, "gmv_90d": "12.34",
    "last_purchase": MINUTE * 60_000 + 40_000,
}


# ---- profiles ------------------------------------------------------------------------------------


def test_profile_by_raw_phone_user_id_and_person_id(settings, prefix, person):
    client = TestClient(create_app(settings, prefix=prefix))
    expected = {"person": PID, "identifiers": sorted([person, "user_id:u42"]), "tags": ["high_value"],
                "profile": PROFILE}
    r = client.get("/v1/profiles/phone:+8613800000000")  # normalised and hashed as the job does
    assert (r.status_code, r.json()) == (200, {"identifier": person, **expected})
    assert person.startswith("phone:") and "13800000000" not in person
    r = client.get("/v1/profiles/user_id:u42")
    assert (r.status_code, r.json()) == (200, {"identifier": "user_id:u42", **expected})
    r = client.get(f"/v1/profiles/{PID}")
    assert (r.status_code, r.json()) == (200, {"identifier": PID, **expected})


def test_profile_unknown_and_malformed(settings, prefix, person):
    client = TestClient(create_app(settings, prefix=prefix))
    r = client.get("/v1/profiles/user_id:nobody")
    assert r.status_code == 404
    assert r.json() == {"error": f"no person has identifier 'user_id:nobody' (prefix '{prefix}'); "
                                 "check the type and value, or whether the job has seen it yet"}
    r = client.get("/v1/profiles/p0000000000000000")
    assert r.status_code == 404
    r = client.get("/v1/profiles/passport:123")
    assert (r.status_code, r.json()) == (400, {"error": "identifier 'passport:123': write it as type:value with "
                                                        "type one of user_id, unionid, openid, phone, email, "
                                                        "device_id, cookie_id"})
    r = client.get("/v1/profiles/user_id:u42?as_of=soon")
    assert (r.status_code, r.json()) == (400, {"error": "query parameter as_of='soon' is not an integer"})


# ---- rules ---------------------------------------------------------------------------------------


def _initial_rows(settings):
    return rows(RuleSetView(settings).initial)


def test_rules_publish_list_pause_resume_delete(settings):
    client = TestClient(create_app(settings))
    control = settings.kafka.topics.control
    r = client.get("/v1/rules")
    assert r.status_code == 200
    assert r.json() == {"ruleset_version": 1, "rules_file": str(REPO / "config" / "rules.yaml"),
                        "control_topic": control, "applied": 0, "rejected": 0, "items": _initial_rows(settings)}

    r = client.post("/v1/rules", content=DOC, headers={"content-type": "application/yaml"})
    assert r.status_code == 202
    assert r.json() == {
        "topic": control, "partition": 0, "offset": 0, "message_id": f"{control}/0/0", "kind": "batch",
        "op": "apply", "items": [{"kind": "rule", "op": "upsert", "id": "cart_push", "version": 1}],
        "predicted": {"ok": True, "kind": "batch", "op": "apply", "id": None, "version": None, "ruleset_version": 2,
                      "reason": None, "cleanup": None,
                      "items": [{"ok": True, "kind": "rule", "op": "upsert", "id": "cart_push", "version": 1,
                                 "ruleset_version": 2, "reason": None, "cleanup": None}]},
    }
    row = {"kind": "rule", "id": "cart_push", "version": 1, "status": "active", "trigger": "event:add_to_cart",
           "channels": ["push"], "priority": 5, "name": "Cart push"}
    listing = client.get("/v1/rules").json()
    assert (listing["ruleset_version"], listing["applied"]) == (2, 1)
    initial = _initial_rows(settings)
    # rules by priority then id: cart_push (5) goes after the priority-10 rule
    at = next(i for i, x in enumerate(initial) if x["kind"] == "rule" and x["priority"] < 5)
    assert listing["items"] == initial[:at] + [row] + initial[at:]

    r = client.get("/v1/rules/cart_push")
    assert r.status_code == 200
    assert r.json() == {**row, "last_result": None, "definition": {
        "id": "cart_push", "version": 1, "name": "Cart push", "priority": 5, "trigger": {"event": ["add_to_cart"]},
        "actions": [{"channel": "push", "template": "cart_nudge"}]}}

    r = client.post("/v1/rules/cart_push/pause")
    assert r.status_code == 202
    assert (r.json()["message_id"], r.json()["items"]) == (
        f"{control}/0/1", [{"kind": "rule", "op": "pause", "id": "cart_push", "version": None}])
    assert client.get("/v1/rules/cart_push").json()["status"] == "paused"
    assert client.post("/v1/rules/cart_push/resume?version=1").status_code == 202
    assert client.get("/v1/rules/cart_push").json()["status"] == "active"

    r = client.delete("/v1/rules/cart_push")
    assert r.status_code == 202
    assert r.json()["predicted"]["cleanup"] == {"state": ["held:cart_push"], "timers": "held-action releases of the rule"}
    assert client.get("/v1/rules").json()["items"] == initial
    r = client.get("/v1/rules/cart_push")
    assert (r.status_code, r.json()) == (404, {"error": "no rule, pattern or journey 'cart_push' in the running rule "
                                                        "set; GET /v1/rules lists them"})
    # what is on the topic is exactly what was published, in order
    sent = [rec.json() for rec in read_topic(settings, control)]
    assert [(m["kind"], m.get("op")) for m in sent] == [("batch", "apply"), ("rule", "pause"), ("rule", "resume"),
                                                      ("rule", "delete")]
    assert sent[2] == {"kind": "rule", "op": "resume", "id": "cart_push", "version": 1}


def test_rules_rejections_send_nothing(settings):
    client = TestClient(create_app(settings))
    r = client.post("/v1/rules", content=DOC.replace("trigger: {event: [add_to_cart]}", "trigger: {event: add_to_cart}"))
    assert r.status_code == 422
    assert r.json() == {"error": "the document has 1 problem(s); nothing was published", "problems": [{
        "file": "<request body>", "line": 7, "column": 22, "object": "rule 'cart_push'",
        "path": "$.rules[0].trigger.event", "message": "'add_to_cart' is a str; write a array",
        "text": "<request body>:7:22: rule 'cart_push' at $.rules[0].trigger.event: 'add_to_cart' is a str; write a array"}]}
    r = client.post("/v1/rules", content="rules: [{")
    assert r.status_code == 422
    assert [p["path"] for p in r.json()["problems"]] == ["$"]
    assert r.json()["problems"][0]["message"].startswith("not valid YAML/JSON: ")

    r = client.post("/v1/rules/nope/pause")
    assert r.status_code == 409
    assert r.json()["error"] == ("the job would reject this: rule 'nope' does not exist; check the id with `zhongtai rules "
                                 "list`; nothing was sent (?check=false sends anyway)")
    # the shipped file is what the job starts from: version 1 again is stale
    r = client.post("/v1/rules", content=(REPO / "config" / "rules.yaml").read_text(encoding="utf-8"))
    assert r.status_code == 409
    assert r.json()["result"]["reason"] == ("item 1 (pattern 'cart_abandon'): stale version 1: pattern 'cart_abandon' "
                                            "runs version 1; publish with version 2 or higher; nothing of the batch "
                                            "was applied")
    r = client.post("/v1/rules/x/pause?kind=tag")
    assert (r.status_code, r.json()) == (400, {"error": "kind 'tag': use one of rule, pattern, journey"})
    r = client.post("/v1/rules/x/pause?version=v2")
    assert (r.status_code, r.json()) == (400, {"error": "query parameter version='v2' is not an integer"})
    assert read_topic(settings, settings.kafka.topics.control) == []


def test_rules_json_document_and_ambiguous_id(settings):
    client = TestClient(create_app(settings))
    doc = {"patterns": [{"id": "cart_push", "version": 1, "type": "count", "event": {"event": "page_view"},
                         "count": 2, "within": "1h"}],
           "rules": [{"id": "cart_push", "version": 1, "name": "Cart push", "trigger": {"pattern": "cart_push"},
                      "actions": [{"channel": "push", "template": "t"}]}]}
    r = client.post("/v1/rules", json=doc)
    assert r.status_code == 202, r.text
    assert [i["kind"] for i in r.json()["items"]] == ["pattern", "rule"]
    r = client.get("/v1/rules/cart_push")
    assert (r.status_code, r.json()["kinds"]) == (409, ["rule", "pattern"])
    r = client.get("/v1/rules/cart_push?kind=pattern")
    assert (r.status_code, r.json()["trigger"]) == (200, "count:page_view x2 within 1h")


# ---- experiments ---------------------------------------------------------------------------------

EXPERIMENT = """
experiments:
  - key: api-test
    version: 3
    unit: person
    variants: [{key: control, weight: 0.5}, {key: treatment, weight: 0.5}]
    start: 2026-11-01T00:00:00Z
    assign_on: [register]
    conversion: {event_type: purchase, window: 7d}
"""


def test_experiment_report_is_the_cli_report(settings, prefix, capsys, monkeypatch):
    from zhongtai import cli

    (defn,) = parse_definitions(EXPERIMENT)
    store = RedisExperiments(settings.redis, prefix=prefix)
    try:
        store.write_meta([defn])
        store.write([ExperimentRow("api-test", "control", 1000, 100, Decimal("1000.00"), Decimal("20000.0000"),
                                   Decimal(0), Decimal(0), Decimal(0)),
                     ExperimentRow("api-test", "treatment", 1010, 130, Decimal("1400.00"), Decimal("26000.0000"),
                                   Decimal(0), Decimal(0), Decimal(0))])
    finally:
        store.close()
    client = TestClient(create_app(settings, prefix=prefix))
    r = client.get("/v1/experiments/api-test")
    assert r.status_code == 200
    assert cli.main(["experiment", "report", "api-test", "--json", "--prefix", prefix]) == 0
    assert r.json() == json.loads(capsys.readouterr().out)
    assert [(v["variation"], v["n"], v["conversions"]) for v in r.json()["variants"]] == [
        ("control", 1000, 100), ("treatment", 1010, 130)]
    listed = client.get("/v1/experiments").json()["experiments"]
    assert [(e["experiment"], e["source"]) for e in listed] == [("api-test", "meta")]
    assert client.get("/v1/experiments/api-test?primary=revenue").json()["primary_metric"] == "revenue"
    r = client.get("/v1/experiments/nope")
    assert (r.status_code, r.json()) == (404, {"error": "no experiment 'nope' in Redis or config/experiments.yaml; "
                                                        "GET /v1/experiments lists them"})
    assert client.get("/v1/experiments/api-test?alpha=x").status_code == 400


def test_experiment_publish_sends_the_cli_messages(settings):
    client = TestClient(create_app(settings))
    control = settings.kafka.topics.control
    r = client.post("/v1/experiments", content=EXPERIMENT)
    assert (r.status_code, r.json()) == (202, {"published": [{"key": "api-test", "version": 3,
                                                              "message_id": f"{control}/0/0"}]})
    (defn,) = parse_definitions(EXPERIMENT)
    assert [rec.json() for rec in read_topic(settings, control)] == [control_message("upsert", "api-test", 3, defn)]
    assert [rec.key for rec in read_topic(settings, control)] == [b"experiment:api-test"]
    r = client.post("/v1/experiments", content=EXPERIMENT.replace("unit: person", "unit: planet"))
    assert (r.status_code, r.json()) == (422, {
        "error": "1 problem(s); nothing was published",
        "problems": ["<request body>:5: experiments[0].unit: must be one of person, device, item, got 'planet'"]})
    assert len(read_topic(settings, control)) == 1


# ---- health, metrics, auth, OpenAPI --------------------------------------------------------------


def test_healthz_and_unreachable_services(settings):
    assert TestClient(create_app(settings)).get("/healthz").json() == {"ok": True, "redis": "ok", "kafka": "ok"}
    down = make_settings(redis={"port": 1}, kafka={"bootstrap": "127.0.0.1:1"})
    r = TestClient(create_app(down)).get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["ok"] is False
    assert body["redis"].startswith("Redis at 127.0.0.1:1 does not answer (")
    assert body["kafka"].startswith("Kafka at 127.0.0.1:1 does not answer (")
    assert body["redis"].endswith("is the stack up (`zhongtai stack status`)?")


def test_metrics_count_by_route_template_and_status(settings, prefix, person):
    app = create_app(settings, prefix=prefix, token="s3cret")
    client = TestClient(app)
    auth = {"Authorization": "Bearer s3cret"}
    for ident in ("user_id:u42", PID, "user_id:nobody"):
        client.get(f"/v1/profiles/{ident}", headers=auth)
    client.get("/v1/profiles/user_id:u42")  # no token
    client.get("/nowhere", headers=auth)
    reg = app.state.metrics.registry

    def n(route: str, status: str) -> float | None:
        return reg.get_sample_value("zhongtai_api_requests_total", {"route": route, "status": status})

    route = "/v1/profiles/{identifier:path}"
    assert (n(route, "200"), n(route, "404"), n(route, "401"), n("other", "404")) == (2.0, 1.0, 1.0, 1.0)
    assert reg.get_sample_value("zhongtai_api_request_seconds_count", {"route": route}) == 4.0
    text = client.get("/metrics", headers=auth).text
    assert 'zhongtai_api_requests_total{route="/v1/profiles/{identifier:path}",status="200"} 2.0' in text
    assert "u42" not in text and PID not in text  # label values are templates, never identifiers


def test_bearer_token(settings):
    client = TestClient(create_app(settings, token="s3cret"))
    r = client.get("/v1/rules")
    assert (r.status_code, r.headers["www-authenticate"]) == (401, 'Bearer realm="zhongtai"')
    assert r.json() == {"error": "missing or wrong bearer token: send `Authorization: Bearer <api.token>`"}
    assert client.get("/v1/rules", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/rules", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_openapi_documents_every_route(settings):
    doc = TestClient(create_app(settings)).get("/openapi.json").json()
    assert doc["openapi"] == "3.0.3"
    assert {p: sorted(ops) for p, ops in doc["paths"].items()} == {
        "/v1/profiles/{identifier}": ["get"],
        "/v1/recommendations/{identifier}": ["get"],
        "/v1/prices/{item}": ["get"],
        "/v1/offers/{identifier}": ["get"],
        "/v1/rules": ["get", "post"],
        "/v1/rules/{id}": ["delete", "get"],
        "/v1/rules/{id}/pause": ["post"],
        "/v1/rules/{id}/resume": ["post"],
        "/v1/experiments": ["get", "post"],
        "/v1/experiments/{key}": ["get"],
        "/v1/audit": ["get"],
        "/v1/builder/document": ["post"],
        "/v1/builder/flows/{id}": ["get"],
        "/v1/builder/audience": ["post"],
        "/v1/expressions/check": ["post"],
        "/healthz": ["get"],
        "/metrics": ["get"],
    }
    assert doc["paths"]["/v1/rules"]["post"]["responses"]["422"]["description"].startswith("invalid document")
    scopes = {(p, m): op.get("x-scope") for p, ops in doc["paths"].items() for m, op in ops.items()}
    assert (scopes["/v1/rules", "post"], scopes["/v1/profiles/{identifier}", "get"], scopes["/v1/audit", "get"],
            scopes["/healthz", "get"]) == ("rules:write", "profiles:read", "audit:read", None)
    assert doc["paths"]["/healthz"]["get"]["security"] == []


def test_zhongtai_api_serves_over_http_with_env_token(settings, prefix, person):
    port = free_port()
    env = {**os.environ, "ZT_API_TOKEN": "tok-" + prefix,
           "ZT__KAFKA__TOPICS__CONTROL": settings.kafka.topics.control,
           "ZT__KAFKA__TOPICS__CONTROL_RESULTS": settings.kafka.topics.control_results}
    proc = subprocess.Popen([sys.executable, "-m", "zhongtai.cli", "api", "--port", str(port), "--prefix", prefix],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                health = httpx.get(base + "/healthz", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("zhongtai api did not listen within 20 s")
        assert health.json() == {"ok": True, "redis": "ok", "kafka": "ok"}
        assert httpx.get(base + "/v1/profiles/user_id:u42").status_code == 401
        r = httpx.get(base + "/v1/profiles/user_id:u42", headers={"Authorization": f"Bearer tok-{prefix}"})
        assert (r.status_code, r.json()["person"], r.json()["tags"]) == (200, PID, ["high_value"])
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=20)[0].decode()
    assert out.splitlines()[0] == (f"zhongtai api on http://127.0.0.1:{port}/ (OpenAPI at /openapi.json, metrics at "
                                   "/metrics; bearer token required); Ctrl-C stops it")
