"""Pure tests of the channel workers: backoff, token bucket, signature, the idempotency state
machine, offset/parking bookkeeping, and the loop itself over in-memory Kafka (no services)."""

from __future__ import annotations

import itertools
import random

import pytest

from connectors.channels.base import Contact, DeliveryResult, render
from connectors.channels.http import sign, verify_signature
from operators.delivery import ledger
from operators.delivery.backoff import Backoff
from operators.delivery.ledger import MemoryLedger, Outcome, Record
from operators.delivery.ratelimit import LocalTokenBucket, take
from operators.messages import Action, ActionDecodeError
from tests.helpers import ROOT, make_settings
from tests.workers_fakes import (
    TOPICS,
    DictDirectory,
    FakeClock,
    FakeKafka,
    ScriptedAdapter,
    action,
    encode,
    make_worker,
)
from zhongtai.services.workers.tracking import OffsetTracker, ParkingLot


# ---- backoff ------------------------------------------------------------------------------------
def test_backoff_without_jitter_doubles_up_to_the_cap():
    b = Backoff(base_ms=100, max_ms=1_000, multiplier=2.0, jitter=0.0)
    rng = random.Random(0)
    assert [b.delay_ms(n, rng) for n in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]
    assert b.delay_ms(10_000, rng) == 1000  # no overflow


def test_backoff_jitter_stays_in_its_band_and_retry_after_wins():
    b = Backoff(base_ms=1_000, max_ms=60_000, multiplier=2.0, jitter=0.5)
    rng = random.Random(7)
    delays = [b.delay_ms(3, rng) for _ in range(500)]
    assert min(delays) >= 2_000 and max(delays) <= 4_000
    assert len(set(delays)) > 100  # control: jitter really varies the delay
    assert b.delay_ms(1, rng, retry_after_s=9.5) == 9_500
    with pytest.raises(ValueError, match="attempt counts from 1"):
        b.delay_ms(0, rng)
    with pytest.raises(ValueError, match="base_ms"):
        Backoff(base_ms=10, max_ms=5)


# ---- token bucket -------------------------------------------------------------------------------
def test_token_bucket_burst_then_paced():
    bucket, waits = None, []
    for _ in range(4):  # burst 3 at t=0
        bucket, w = take(bucket, 0, per_s=10.0, burst=3)
        waits.append(w)
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(0.1)
    bucket, w = take(bucket, 50, 10.0, 3)  # half a token refilled
    assert w == pytest.approx(0.05)
    bucket, w = take(bucket, 100, 10.0, 3)
    assert w == 0.0 and bucket.tokens == pytest.approx(0.0)
    bucket, w = take(bucket, 60_000, 10.0, 3)  # refill is capped at burst
    assert w == 0.0 and bucket.tokens == pytest.approx(2.0)
    bucket, w = take(bucket, 10, 10.0, 3)  # clock stepping back refills nothing
    assert bucket.updated_ms == 60_000 and bucket.tokens == pytest.approx(1.0)


def test_local_bucket_paces_a_fake_clock():
    clock = FakeClock(0.0)
    lim = LocalTokenBucket(per_s=5.0, burst=1)
    stamps = []
    for _ in range(6):
        while (w := lim.try_take(int(clock() * 1000))) > 0:
            clock.sleep(w)
        stamps.append(clock())
    assert [round(b - a, 3) for a, b in itertools.pairwise(stamps)] == [0.2] * 5


# ---- signature ----------------------------------------------------------------------------------
def test_signature_known_vector_and_verification():
    # HMAC-SHA256("k", "1700000000.{}") computed independently (openssl dgst -sha256 -hmac k)
    assert sign(b"k", 1_700_000_000, b"{}") == (
        "v1=c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146"
    )
    sig = sign(b"secret", 1_700_000_000, b'{"a":1}')
    assert verify_signature(b"secret", "1700000000", b'{"a":1}', sig, now_s=1_700_000_010)
    assert not verify_signature(b"secret", "1700000000", b'{"a":2}', sig, now_s=1_700_000_010)  # body changed
    assert not verify_signature(b"other", "1700000000", b'{"a":1}', sig, now_s=1_700_000_010)  # wrong key
    assert not verify_signature(b"secret", "1700000000", b'{"a":1}', sig, now_s=1_700_001_000)  # replayed late
    assert not verify_signature(b"secret", "nope", b'{"a":1}', sig, now_s=1_700_000_010)


# ---- the idempotency state machine ---------------------------------------------------------------
def test_ledger_claim_finish_transitions():
    new, c = ledger.claim(None, "w1", "t/0/5", now_ms=1_000, lease_ms=500)
    assert c.kind == "acquired" and new == c.record
    assert (new.state, new.attempts, new.owner, new.lease_until_ms, new.src, new.in_doubt) == (
        "claimed", 1, "w1", 1_500, "t/0/5", False)
    # another worker while the lease lives: busy, nothing written
    assert ledger.claim(new, "w2", "t/0/9", 1_400, 500) == (None, ledger.Claim("busy", new))
    # transient failure: pending, then the next claim counts attempt 2
    pending = ledger.finish(new, "w1", Outcome("pending", reason="503"), 1_100)
    assert (pending.state, pending.attempts, pending.owner, pending.reason) == ("pending", 1, "", "503")
    again, c2 = ledger.claim(pending, "w2", "t/0/9", 1_200, 500)
    assert c2.kind == "acquired" and again.attempts == 2 and again.src == "t/0/9" and not again.in_doubt
    done = ledger.finish(again, "w2", Outcome("delivered", provider_id="m1"), 1_300)
    assert (done.state, done.provider_id, done.attempts, done.ts_ms, done.terminal) == ("delivered", "m1", 2, 1_300, True)
    # a terminal record is never claimed again, whoever asks
    for who, when in (("w1", 1_301), ("w3", 10**12)):
        assert ledger.claim(done, who, "t/1/1", when, 500) == (None, ledger.Claim("done", done))
    # finishing something one does not hold changes nothing
    assert ledger.finish(done, "w2", Outcome("failed"), 1_400) is None
    assert ledger.finish(None, "w2", Outcome("failed"), 1_400) is None


def test_ledger_expired_lease_is_taken_over_in_doubt_and_the_old_holder_loses():
    held, _ = ledger.claim(None, "dead", "t/0/5", 1_000, 500)
    taken, c = ledger.claim(held, "w2", "t/0/5", 1_501, 500)
    assert c.kind == "acquired" and taken.in_doubt and taken.attempts == 2 and taken.owner == "w2"
    assert ledger.finish(taken, "dead", Outcome("delivered", provider_id="x"), 1_600) is None
    assert ledger.finish(taken, "w2", Outcome("delivered", provider_id="y"), 1_600).provider_id == "y"


def test_record_hash_round_trip():
    r = Record("delivered", 3, "", 0, "t/1/7", True, "m-1", "", 123)
    assert Record.from_hash(r.to_hash()) == r
    assert Record.from_hash({}) is None


# ---- bookkeeping --------------------------------------------------------------------------------
def test_offset_tracker_commits_contiguous_prefix_with_its_outputs():
    t = OffsetTracker()
    tp = ("a", 0)
    for o in (10, 11, 12, 13):
        t.add(tp, o)
    t.done(tp, 11, ["r11"])
    t.done(tp, 13, ["r13"])
    assert t.drain() == ({}, [])  # 10 unfinished: nothing moves, nothing released
    t.done(tp, 10, ["r10"])
    assert t.drain() == ({tp: 12}, ["r10", "r11"])
    assert t.unfinished() == 1 and len(t) == 2
    t.done(tp, 12)
    assert t.drain() == ({tp: 14}, ["r13"])
    with pytest.raises(ValueError, match="offsets must increase"):
        t.add(tp, 5)
    t.add(("a", 1), 0)
    assert t.drop([("a", 1)]) == 1 and len(t) == 0


def test_parking_lot_due_order_and_gates():
    p: ParkingLot[str] = ParkingLot()
    p.park("b", 200)
    p.park("a", 100)
    p.park("c", 200)
    assert p.next_due_ms() == 100 and p.pop_due(99) == []
    assert p.pop_due(200) == ["a", "b", "c"] and len(p) == 0
    p.close("host", 500)
    p.close("host", 400)  # never shortens
    assert p.closed_until("host", 450) == 500 and p.closed_until("host", 500) is None
    p.open("host")
    assert p.closed_until("host", 0) is None


# ---- decoding and rendering ---------------------------------------------------------------------
def test_action_decode_and_errors():
    a = action(1, coupon_value=20)
    assert Action.decode(encode(a)) == a
    for raw, msg in ((b"", "empty"), (b"{", "not JSON"), (b"[1]", "not a JSON object"),
                     (b'{"action_id": 5}', "action_id"), (b'{"action_id": "x", "person_id": "p"}', "channel"),
                     (b'{"action_id":"x","person_id":"p","channel":"sms","template":"t","params":[]}', "params")):
        with pytest.raises(ActionDecodeError, match=msg):
            Action.decode(raw)


def test_render_fills_params_and_tolerates_unknown_templates():
    a = action(1, coupon_value=20)
    tpl = {"welcome": {"subject": "Hi $person_id", "body": "Take $coupon_value off ($missing)"}}
    assert render(tpl, a) == ("Hi p1", "Take 20 off ($missing)")
    assert render({}, a) == ("welcome", "welcome (coupon_value=20)")


# ---- the loop over in-memory Kafka -------------------------------------------------------------
def _cfg(**kw):
    base = {"backoff_base_ms": 100, "backoff_max_ms": 1_000, "backoff_jitter": 0.0, "max_attempts": 3,
            "lease_ms": 20_000, "batch_size": 10, "poll_timeout_ms": 50}
    return make_settings(worker={**base, **kw}).worker


def _directory(n: int, host: str = "http://a") -> DictDirectory:
    return DictDirectory({f"p{i}": Contact(f"p{i}", webhook_url=f"{host}/hook") for i in range(n)})


def test_loop_retries_transient_then_delivers_and_dead_letters_permanent():
    clock = FakeClock()
    k = FakeKafka(partitions=1)
    for i in range(4):
        k.append(encode(action(i)), key=f"p{i}".encode())
    k.append(b"not json")
    t, p = DeliveryResult.transient, DeliveryResult.permanent
    adapter = ScriptedAdapter(clock=clock, script={
        f"{1:032x}": [t("HTTP 503")],                               # retried once, then delivered
        f"{2:032x}": [p("HTTP 400 bad")],                           # dead letter at once
        f"{3:032x}": [t("HTTP 503"), t("HTTP 503"), t("HTTP 503")],  # exhausted after 3 attempts
    })
    directory = DictDirectory({f"p{i}": Contact(f"p{i}", webhook_url=f"http://h{i}/x") for i in range(4)})
    w = make_worker(_cfg(), k, adapter, directory, clock)
    t0 = clock()
    stats = w.run(idle_exit_s=1.0)
    assert (stats.delivered, stats.failed, stats.retried, stats.invalid) == (2, 2, 3, 1)
    # backoff of action 3: 100 ms then 200 ms after its failed attempts (jitter 0)
    calls3 = [round((ts - t0) * 1000) for aid, ts in adapter.calls if aid == f"{3:032x}"]
    assert [b - a for a, b in itertools.pairwise(calls3)] == [100, 200]
    rec = {r["action_id"]: r for r in k.receipts()}
    assert {a: (r["status"], r["attempts"]) for a, r in rec.items()} == {
        f"{0:032x}": ("delivered", 1), f"{1:032x}": ("delivered", 2),
        f"{2:032x}": ("failed", 1), f"{3:032x}": ("failed", 3)}
    dlq = {dict(r.headers).get("action_id", b"").decode(): dict(r.headers)["reason"].decode()
           for r in k.topic(TOPICS.dlq)}
    assert dlq == {f"{2:032x}": "permanent: HTTP 400 bad",
                   f"{3:032x}": "retries_exhausted after 3 attempts: HTTP 503",
                   "": "invalid: not JSON: invalid literal, expected 'null': line 1 column 1 (char 0)"}
    assert k.committed == {(TOPICS.actions, 0): 5}


class _HostDown(ScriptedAdapter):
    """Host ``http://a`` answers 503 until ``up_at`` (clock time); everything else is accepted."""

    def __init__(self, clock: FakeClock, up_at: float) -> None:
        super().__init__(clock=clock)
        self.up_at = up_at

    def deliver(self, action, contact):  # type: ignore[no-untyped-def]
        if contact.webhook_url == "http://a" and self.clock() < self.up_at:
            self.calls.append((action.action_id, self.clock()))
            return DeliveryResult.transient("HTTP 503")
        return super().deliver(action, contact)


def test_loop_failing_destination_is_parked_and_others_flow():
    """Host a is down for 250 ms; b's actions, interleaved in the same partition, are all delivered
    before a's first retry. While a is closed its other actions fail their attempts without a
    request: a sees one probe per retry round, and all of a's actions go out once it is back."""
    clock = FakeClock()
    k = FakeKafka(partitions=1)
    contacts = {}
    for i in range(12):
        contacts[f"p{i}"] = Contact(f"p{i}", webhook_url="http://a" if i % 4 == 0 else "http://b")
        k.append(encode(action(i)))
    adapter = _HostDown(clock, up_at=clock() + 0.25)
    w = make_worker(_cfg(batch_size=100, max_attempts=4), k, adapter, DictDirectory(contacts), clock)
    stats = w.run(idle_exit_s=2.0)
    is_a = [int(aid, 16) % 4 == 0 for aid, _ in adapter.calls]
    a_calls = [(aid[-1], round(ts - adapter.calls[0][1], 3)) for (aid, ts), a in zip(adapter.calls, is_a) if a]
    assert a_calls == [("0", 0.0), ("0", 0.1), ("0", 0.3), ("4", 0.3), ("8", 0.3)]
    b_times = [ts for (aid, ts), a in zip(adapter.calls, is_a) if not a]
    assert len(b_times) == 9 and max(b_times) < adapter.calls[0][1] + 0.1
    assert stats.delivered == 12 and k.committed == {(TOPICS.actions, 0): 12}
    assert {r["action_id"][-1]: r["attempts"] for r in k.receipts() if int(r["action_id"], 16) % 4 == 0} == {
        "0": 3, "4": 3, "8": 3}


def test_loop_duplicates_and_suppression_emit_one_receipt_each():
    clock = FakeClock()
    k = FakeKafka(partitions=1)
    for i in (0, 1, 0, 2, 3, 1, 0):
        k.append(encode(action(i)))
    directory = DictDirectory({
        "p0": Contact("p0", webhook_url="http://a"),
        "p1": Contact("p1", webhook_url="http://a", opt_out=frozenset({"webhook"})),
        "p3": Contact("p3", email="x@y"),  # no webhook address
    })  # p2 unknown
    adapter = ScriptedAdapter(clock=clock)
    w = make_worker(_cfg(), k, adapter, directory, clock)
    stats = w.run(idle_exit_s=1.0)
    assert adapter.counts() == {f"{0:032x}": 1}
    assert sorted((r["action_id"][-1], r["status"], r["reason"]) for r in k.receipts()) == [
        ("0", "delivered", None), ("1", "suppressed", "opted_out"), ("2", "suppressed", "no_contact"),
        ("3", "suppressed", "no_address")]
    assert (stats.duplicates, stats.suppressed, stats.delivered) == (3, 3, 1)


def test_loop_pauses_when_parking_is_full():
    clock = FakeClock()
    k = FakeKafka(partitions=1)
    for i in range(6):
        k.append(encode(action(i)))
    script = {f"{i:032x}": [DeliveryResult.transient("503")] for i in range(6)}
    adapter = ScriptedAdapter(clock=clock, script=script)
    directory = DictDirectory({f"p{i}": Contact(f"p{i}", webhook_url=f"http://h{i}") for i in range(6)})
    w = make_worker(_cfg(max_parked=2, batch_size=1), k, adapter, directory, clock)
    w.run(idle_exit_s=1.0)
    # with room for 2 parked actions, no more than 2 first attempts precede the first retry
    seen: set[str] = set()
    for n, (aid, _) in enumerate(adapter.calls):
        if aid in seen:
            assert n <= 2
            break
        seen.add(aid)
    assert adapter.counts() == {f"{i:032x}": 1 for i in range(6)}


def test_memory_ledger_is_the_state_machine():
    m = MemoryLedger()
    c = m.claim("a", "w", "s", 0, 10)
    assert c.kind == "acquired" and m.get("a") == c.record
    assert m.finish("a", "w", Outcome("delivered", provider_id="p"), 5).state == "delivered"
    assert m.claim("a", "w2", "s2", 6, 10).kind == "done"


def test_worker_modules_load_without_pyflink():
    """The workers never touch Flink: every module imports with ``pyflink`` unimportable."""
    import subprocess
    import sys

    mods = ["operators.delivery." + m for m in ("backoff", "ratelimit", "ledger")]
    mods += ["zhongtai.services.workers." + m for m in ("tracking", "metrics", "worker")]
    mods += ["connectors.channels." + m for m in ("base", "contacts", "smtp", "http", "redis_state", "kafka_io")]
    mods.append("zhongtai.cli_workers")
    code = ("import sys; sys.modules['pyflink'] = None\n"
            + "".join(f"import {m}\n" for m in mods)
            + "assert not any(k.startswith('pyflink.') for k in sys.modules); print('ok')")
    root = ROOT
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=root, capture_output=True, text=True,
                         timeout=60, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert (out.returncode, out.stdout.strip()) == (0, "ok"), out.stderr
    # control: the guard really blocks pyflink
    bad = subprocess.run([sys.executable, "-c", "import sys; sys.modules['pyflink'] = None; import pyflink"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "ModuleNotFoundError" in bad.stderr


class _ParamsAdapter(ScriptedAdapter):
    """Records the params each delivered action carried."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.params: dict[str, dict] = {}

    def deliver(self, action, contact):  # type: ignore[no-untyped-def]
        self.params[action.action_id] = dict(action.params)
        return super().deliver(action, contact)


def test_recs_params_are_filled_at_send_time_and_a_store_outage_is_retried():
    clock = FakeClock()
    k = FakeKafka(partitions=1)
    k.append(encode(action(0, "p0", recs="{{recs:2}}", other="x")), key=b"p0")
    k.append(encode(action(1, "p1", recs="{{recs:500}}")), key=b"p1")     # k out of range: permanent
    k.append(encode(action(2, "p2", note="no recs here")), key=b"p2")
    adapter = _ParamsAdapter(clock)
    calls: list[tuple[str, int]] = []

    def recs(person: str, n: int) -> list[tuple[str, float]]:
        calls.append((person, n))
        if len(calls) == 1:
            raise ConnectionError("redis down")                             # the first lookup fails
        return [("i7", 0.9), ("i3", 0.5), ("i1", 0.1)][:n]

    w = make_worker(_cfg(), k, adapter, _directory(3), clock)
    w.recs = recs
    stats = w.run(idle_exit_s=1.0)
    assert adapter.params == {f"{0:032x}": {"recs": ["i7", "i3"], "other": "x"},
                              f"{2:032x}": {"note": "no recs here"}}
    assert calls == [("p0", 2), ("p0", 2)]                                # retried after the outage
    assert (stats.delivered, stats.failed, stats.retried) == (2, 1, 1)
    dlq = {dict(r.headers)["action_id"].decode(): dict(r.headers)["reason"].decode() for r in k.topic(TOPICS.dlq)}
    assert dlq == {f"{1:032x}": "permanent: recs: action param 'recs': '{{recs:500}}' asks for 500 items; write "
                                "{{recs:k}} with k between 1 and 100"}


def test_without_a_recs_lookup_params_go_out_as_written():
    clock = FakeClock()
    k = FakeKafka(partitions=1)
    k.append(encode(action(0, "p0", recs="{{recs}}")), key=b"p0")
    adapter = _ParamsAdapter(clock)
    w = make_worker(_cfg(), k, adapter, _directory(1), clock)
    w.run(idle_exit_s=1.0)
    assert adapter.params == {f"{0:032x}": {"recs": "{{recs}}"}}
