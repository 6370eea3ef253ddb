"""Plugins (config/plugins.py, docs/plugins.md): the example packages under ``plugins/`` installed the way pip lays
them out (``tests/plugins_env.py``), found by their entry points, their config sections validated; the WeChat
channel against a local HTTP server speaking WeChat's API and through a real worker (real Kafka and Redis)
delivering exactly once; the logistics enricher against a local logistics service, run over a fresh events topic
and feeding its answers back as events the job's decode accepts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest

from config.plugins import (
    BUILTIN_CHANNELS,
    CHANNEL_GROUP,
    ENRICHER_GROUP,
    PluginError,
    channel_names,
    enricher_names,
    load_plugin,
)
from connectors.channels import build_adapter
from connectors.channels.base import Contact
from operators.envelope import Pseudonyms, decode_full
from operators.messages import Action
from tests.helpers import ROOT, fresh_names, make_settings, read_topics
from tests.plugins_env import FakeLogistics, FakeWeChat, installed
from tests.workers_env import (
    cleanup,
    create,
    make_action,
    produce,
    read_topic,
    receipts,
    topics_of,
    worker_settings,
    write_contacts,
)

WECHAT = {"appid": "wx-app", "secret": "wx-secret",
          "templates": {"welcome": {"kind": "template", "template_id": "TPL-1", "url": "https://shop.test/c",
                                    "data": {"first": "Hi $person_id", "coupon": "$coupon_value"}},
                        "notice": {"template_id": "SUB-9", "page": "pages/index", "data": {"thing1": "$campaign"}}}}


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def _wechat(server: FakeWeChat, clock: Clock, **over):
    settings = make_settings()
    return build_adapter("wechat", settings.worker, clock, {"wechat": {**WECHAT, "api_base": server.url, **over}})


# ---- discovery and config ------------------------------------------------------------------------


def test_plugins_are_found_by_their_entry_points_and_their_sections_validated(tmp_path):
    assert channel_names() == BUILTIN_CHANNELS and enricher_names() == ()  # negative control: not installed
    with pytest.raises(PluginError, match="no zhongtai.channels plugin 'wechat' is installed"):
        load_plugin(CHANNEL_GROUP, "wechat", {})
    with installed(tmp_path, "zhongtai-wechat", "zhongtai-logistics"):
        assert channel_names() == (*BUILTIN_CHANNELS, "wechat")
        assert enricher_names() == ("logistics",)
        with pytest.raises(PluginError) as e:
            load_plugin(CHANNEL_GROUP, "wechat", {"wechat": {"appid": "", "templates": {"x": {"kind": "fax"}}}})
        assert str(e.value).startswith("plugin 'wechat': its config section is invalid: plugins.wechat.appid: ")
        assert "plugins.wechat.secret: Field required" in str(e.value)
        assert "plugins.wechat.templates.x.kind: Input should be 'subscribe' or 'template'" in str(e.value)
        factory, cfg = load_plugin(ENRICHER_GROUP, "logistics", {"logistics": {"url": "http://x.test"}})
        assert (factory.__name__, cfg.event_types, cfg.emits) == ("LogisticsEnricher", ("purchase",),
                                                                  "logistics_update")
    assert channel_names() == BUILTIN_CHANNELS


def test_zhongtai_plugins_list_and_the_rule_schema_take_the_plugin_channel(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - id: wx\n    version: 1\n    trigger: {event: [register]}\n"
                     "    actions:\n      - {channel: wechat, template: welcome}\n", encoding="utf-8")
    conf = tmp_path / "conf.yaml"
    conf.write_text(json.dumps({"plugins": {"wechat": WECHAT}}), encoding="utf-8")

    def cli(*args: str, with_plugins: bool) -> subprocess.CompletedProcess[str]:
        path = f"{tmp_path / 'site'}{os.pathsep}{ROOT}" if with_plugins else str(ROOT)
        return subprocess.run([sys.executable, "-m", "zhongtai.cli", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "PYTHONPATH": path})

    (tmp_path / "site").mkdir()
    bare = cli("rules", "validate", str(rules), with_plugins=False)  # negative control: no plugin, no channel
    assert bare.returncode == 1 and "wechat" in bare.stderr
    with installed(tmp_path / "site", "zhongtai-wechat", "zhongtai-logistics"):
        ok = cli("rules", "validate", str(rules), with_plugins=True)
        assert ok.returncode == 0, ok.stderr
        listed = cli("--config", str(conf), "plugins", "list", "--json", with_plugins=True)
    rows = json.loads(listed.stdout)
    assert listed.returncode == 1  # the logistics section is missing: said, with the field
    assert [(r["kind"], r["name"], r["package"], r["entry_point"]) for r in rows] == [
        ("channel", "wechat", "zhongtai-wechat", "zhongtai_wechat:WeChatChannel"),
        ("enricher", "logistics", "zhongtai-logistics", "zhongtai_logistics:LogisticsEnricher")]
    assert rows[0]["config"] == "ok"
    assert rows[1]["config"] == ("plugin 'logistics': its config section is invalid: plugins.logistics.url: "
                                 "Field required")


# ---- the WeChat channel --------------------------------------------------------------------------


def test_wechat_refreshes_its_token_and_maps_error_codes(tmp_path):
    clock = Clock()
    errcodes = {"o-unsub": [43101], "o-bad": [40003], "o-busy": [-1], "o-quota": [45009]}
    with installed(tmp_path, "zhongtai-wechat"), FakeWeChat(sends_per_token=2, errcodes=errcodes) as wx:
        ad = _wechat(wx, clock)
        try:
            results = [ad.deliver(make_action(i, "wechat", coupon_value=i), Contact(f"p{i}", openid=f"o-{i}"))
                       for i in range(3)]
            assert [(r.status, r.provider_id) for r in results] == [("delivered", "1001"), ("delivered", "1002"),
                                                                   ("delivered", "1003")]
            # the third send met an expired token (42001): fetched again and sent again, once
            assert ([m["token"] for m in wx.sent], ad.token_fetches) == (["tok-1", "tok-1", "tok-2"], 2)
            assert wx.sent[0] == {"kind": "template", "token": "tok-1", "touser": "o-0", "template_id": "TPL-1",
                                  "url": "https://shop.test/c", "client_msg_id": f"{0:032x}",
                                  "data": {"first": {"value": "Hi p0"}, "coupon": {"value": "0"}}}
            clock.t += 7200 - 300  # the refresh margin before WeChat's expiry: a new token without a refusal
            notice = Action("a-notice", "r", 1, "p7", "wechat", "notice", campaign="spring")
            r = ad.deliver(notice, Contact("p7", openid="o-7"))
            assert (r.status, ad.token_fetches, wx.sent[-1]) == ("delivered", 3, {
                "kind": "subscribe", "token": "tok-3", "touser": "o-7", "template_id": "SUB-9",
                "page": "pages/index", "data": {"thing1": {"value": "spring"}}})
            outcomes = {o: ad.deliver(make_action(9, "wechat"), Contact("p9", openid=o)) for o in errcodes}
            assert {o: (r.status, r.reason, r.retry_after_s) for o, r in outcomes.items()} == {
                "o-unsub": ("suppressed", "not_subscribed", None),
                "o-bad": ("permanent", "wechat /cgi-bin/message/template/send: errcode 40003 error 40003", None),
                "o-busy": ("transient", "wechat /cgi-bin/message/template/send: errcode -1 error -1", None),
                "o-quota": ("transient", "wechat /cgi-bin/message/template/send: errcode 45009 error 45009", 60.0)}
            assert ad.deliver(make_action(9, "wechat"), Contact("p9")).reason == "no_address"
            assert ad.deliver(Action("a-x", "r", 1, "p9", "wechat", "nope"), Contact("p9", openid="o-9")).reason == (
                "wechat: no template 'nope' in plugins.wechat.templates")
        finally:
            ad.close()
        wrong = _wechat(wx, clock, secret="not-it")
        try:
            r = wrong.deliver(make_action(1, "wechat"), Contact("p1", openid="o-1"))
            assert (r.status, r.reason) == ("permanent", "wechat token: errcode 40013 invalid appid")
        finally:
            wrong.close()


@pytest.mark.stack
def test_wechat_through_a_real_worker_delivers_each_action_exactly_once(tmp_path):
    from zhongtai.services.workers.worker import build_worker

    names = fresh_names()
    base = worker_settings(names, tmp_path / "contacts.yaml")
    topics = topics_of(base, "wechat")
    create(base, topics)
    write_contacts(Path(base.worker.contacts.path),
                   {**{f"p{i}": {"openid": f"o-{i}"} for i in range(8)}, "p8": {"email": "x@example.com"}})
    acts = [make_action(i, "wechat", coupon_value=i) for i in range(9)]
    produce(base, topics[0], [*acts, acts[0], acts[3]])  # two duplicates

    def run(settings, n):
        w = build_worker(settings, "wechat")
        stop = threading.Event()
        guard = threading.Timer(60, stop.set)
        guard.start()
        try:
            return w.run(max_messages=n, stop=stop)
        finally:
            guard.cancel()
            w.close()

    try:
        with installed(tmp_path / "site", "zhongtai-wechat"), \
                FakeWeChat(sends_per_token=3, errcodes={"o-5": [-1]}) as wx:
            s = base.model_copy(update={"plugins": {"wechat": {**WECHAT, "api_base": wx.url}}})
            stats = run(s, 11)
            sent = Counter(m["client_msg_id"] for m in wx.sent)
            assert sent == Counter({a.action_id: 1 for a in acts[:8]})  # p8 has no openid
            assert wx.tokens_issued >= 3  # the token expired every 3 sends and was fetched again
            assert wx.refused.count(("o-5", -1)) == 1
            rs = receipts(s)
            assert Counter(r["action_id"] for r in rs) == Counter({a.action_id: 1 for a in acts})
            st = {r["action_id"]: (r["status"], r["attempts"], r["reason"]) for r in rs}
            assert st[acts[5].action_id] == ("delivered", 2, None)
            assert st[acts[8].action_id] == ("suppressed", 1, "no_address")
            assert (stats.delivered, stats.suppressed, stats.duplicates) == (8, 1, 2)
            # the whole topic again in another group: the ledger lets nothing through twice ...
            again = run(s.model_copy(update={"worker": s.worker.model_copy(update={"group": names.group + "-2"})}), 11)
            assert (again.delivered, len(wx.sent)) == (0, 8)
            # ... negative control: without the idempotency record it would send again
            off = s.model_copy(update={"worker": s.worker.model_copy(update={"group": names.group + "-3",
                                                                             "idempotency": False})})
            assert run(off, 11).delivered == 8 and len(wx.sent) == 16
    finally:
        cleanup(base, topics)


# ---- the logistics enricher ----------------------------------------------------------------------


def _envelope(eid: str, etype: str, order: str | None = None) -> bytes:
    props = {"order_id": order, "price": 10} if order else {"page": "/"}
    return orjson.dumps({"event_id": eid, "event_type": etype, "ts": 1_700_000_000_000,
                         "ids": {"user_id": "u1", "phone": "+8613800000000"}, "props": props, "source": "web"})


@pytest.mark.stack
def test_the_logistics_enricher_feeds_each_order_back_as_an_event(tmp_path):
    from zhongtai.services.enrichers import build_runner

    tag = fresh_names().tag
    events_in, out = f"zt.t{tag}.events.shop", f"zt.t{tag}.events.enriched"
    # a fresh Redis prefix too: cleanup() deletes the prefix's keys
    settings = make_settings(kafka={"topics": {"events": rf"zt\.t{tag}\.events\..*"}}, redis={"prefix": f"t{tag}"})
    orders = {"o1": {"carrier": "SF", "tracking_no": "SF100", "status": "in_transit", "eta": "2026-12-09"},
              "o2": {"carrier": "JD", "tracking_no": "JD7", "status": "delivered"}}
    dlq = f"zt.t{tag}.enrichers.logistics.dlq"
    create(settings, [events_in, out, dlq])
    produce(settings, events_in, [_envelope("e1", "purchase", "o1"), _envelope("e2", "page_view"),
                                  _envelope("e3", "purchase", "o2"), _envelope("e4", "purchase", "unknown"),
                                  _envelope("e5", "purchase", "o-down"), b"{not json"])
    slept: list[float] = []
    try:
        with installed(tmp_path, "zhongtai-logistics"), \
                FakeLogistics(orders, fail_first={"o2": 1, "o-down": 99}, token="lt") as svc:
            s = settings.model_copy(update={"plugins": {"logistics": {"url": svc.url, "token": "lt"}}})
            runner = build_runner(s, "logistics", out_topic=out, group=f"g{tag}", dlq_topic=dlq, clock=lambda: 1_700_000_100.0,
                                  sleep=slept.append)
            try:
                stats = runner.run(max_events=6, stop=threading.Event())
            finally:
                runner.close()
            assert (stats.read, stats.matched, stats.emitted, stats.retried, stats.dead) == (6, 4, 2, 5, 1)
            assert sorted(slept) == [0.5, 0.5, 1.0, 2.0, 4.0]  # o2 once; o-down four times, then its dead letter
            assert sorted(svc.asked) == sorted(["o1", "o2", "o2", "unknown", *["o-down"] * 5])
            emitted = [orjson.loads(m.value()) for m in read_topics(s, [out], idle_polls=2)]
            assert sorted(emitted, key=lambda e: e["event_id"]) == [
                {"event_id": "e1:logistics", "event_type": "logistics_update", "ts": 1_700_000_100_000,
                 "ids": {"user_id": "u1", "phone": "+8613800000000"}, "source": "enricher",
                 "props": {"order_id": "o1", "carrier": "SF", "tracking_no": "SF100", "shipping_status": "in_transit",
                           "eta": "2026-12-09"}},
                {"event_id": "e3:logistics", "event_type": "logistics_update", "ts": 1_700_000_100_000,
                 "ids": {"user_id": "u1", "phone": "+8613800000000"}, "source": "enricher",
                 "props": {"order_id": "o2", "carrier": "JD", "tracking_no": "JD7", "shipping_status": "delivered"}}]
            # the job's own decode takes them: same person ids as the order (the phone hashed as always)
            pseudonyms = Pseudonyms.of(s)
            order = decode_full(_envelope("e1", "purchase", "o1"), 1_700_000_000_000, s.job, pseudonyms)
            back = decode_full(json.dumps(emitted[0]).encode(), 1_700_000_100_000, s.job, pseudonyms)
            assert not isinstance(back, str) and not isinstance(order, str)
            assert (back.event.event_type, back.event.person) == ("logistics_update", order.event.person)
            [(_, value, headers)] = read_topic(s, dlq)
            assert (orjson.loads(value)["event_id"], headers["reason"]) == (
                "e5", f"try_later after 5 attempt(s): GET {svc.url}/orders/o-down: HTTP 503")
    finally:
        cleanup(settings, [events_in, out, dlq])
