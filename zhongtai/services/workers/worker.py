"""The channel worker loop: ``zt.actions.<channel>`` in, deliveries + ``zt.delivery`` receipts out.

Per message (docs/workers.md has the crash-safety argument):

1. decode; a broken message or one of another channel is dead-lettered (``invalid``);
2. resolve the contact; unknown person / opted out / no address → ``suppressed``;
3. take a rate-limit token, then ``claim`` the action's idempotency record (lease ``lease_ms``):
   ``done`` → never deliver again (re-emit the receipt if this is the very message that settled it,
   i.e. a replay after a crash; a duplicate message emits nothing); ``busy`` → park until the lease ends;
4. deliver; record the outcome (``finish``): delivered / suppressed / failed (permanent, or transient
   after ``max_attempts``: dead letter with the reason) / pending (transient: park with backoff).
   A transient failure closes the destination until that retry is due; an action for a closed
   destination counts a failed attempt without a request (one probe per round, not a flood);
5. the message's receipt and dead letter are released when its partition's committed offset can
   move past it, and produced in the same Kafka transaction as that offset. A commit attempt that is
   stuck longer than ``worker.commit_watchdog_ms`` ends the process with exit code 75
   (``zhongtai.services.workers.watchdog``): its supervisor restarts it, nothing is lost.

Nothing blocks a partition: parked actions wait in memory while later ones flow; the committed
offset stays behind the oldest unfinished one, so a crash re-reads them and the ledger skips what
was already settled.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from connectors.channels.base import CONTACTLESS_CHANNELS, ChannelAdapter, Contact, DeliveryResult
from connectors.channels.contacts import ContactDirectory, ContactLookupError
from connectors.channels.kafka_io import InMessage, OutRecord, commit_label
from operators.delivery.backoff import Backoff
from operators.delivery.ledger import Ledger, Outcome, Record
from operators.delivery.ratelimit import RateLimiter
from operators.messages import Action, ActionDecodeError, DeliveryReceipt
from zhongtai.services.recommendations import fill_recs, person_recommendations
from zhongtai.services.workers.metrics import WorkerMetrics
from zhongtai.services.workers.tracking import TP, OffsetTracker, ParkingLot
from zhongtai.services.workers.watchdog import EXIT_COMMIT_HUNG, CommitWatchdog, Hang, exit_process

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

    from config.settings import KafkaSettings, Settings, WorkerSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerTopics:
    actions: str
    dlq: str
    delivery: str

    @classmethod
    def of(cls, kafka: KafkaSettings, channel: str) -> WorkerTopics:
        actions = kafka.topics.actions_prefix + channel
        return cls(actions=actions, dlq=actions + ".dlq", delivery=kafka.topics.delivery)


def worker_transactional_id(settings: Settings, channel: str) -> str:
    """Stable per ``(Redis prefix, group, channel, instance)``: a restarted worker fences its dead predecessor,
    and workers of other prefixes or groups (other namespaces) never fence each other."""
    cfg = settings.worker
    return f"{settings.redis.prefix}-{cfg.group}-{channel}-{cfg.instance_id}"


@dataclass
class WorkerStats:
    """What this process did (receipts are the durable record; these are per run)."""

    received: int = 0
    delivered: int = 0
    in_doubt: int = 0
    failed: int = 0
    suppressed: int = 0
    retried: int = 0
    duplicates: int = 0
    replays: int = 0
    invalid: int = 0
    commits: int = 0


class WorkerIO(Protocol):
    """What the loop needs of Kafka (``connectors.channels.kafka_io.KafkaWorkerIO``)."""

    def poll(self, max_messages: int, timeout_s: float) -> list[InMessage]: ...

    def pause_all(self) -> None: ...

    def resume_all(self) -> None: ...

    def commit(self, outputs: Sequence[OutRecord], offsets: dict[TP, int]) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Item:
    msg: InMessage
    action: Action
    lookup_failures: int = 0


class ChannelWorker:
    """Delivers one channel's actions. Build it with ``build_worker``; ``run`` until stopped.

    ``clock`` (epoch seconds), ``sleep`` and ``rng`` are injected so that retries and rate limits are
    testable without waiting; ``owner`` names this process in the ledger's claims. ``watchdog`` watches each
    commit (default: one of ``cfg.commit_watchdog_ms``); when one is stuck the worker logs it, counts it and
    calls ``on_hang`` (default: end the process with exit code 75).
    """

    def __init__(self, channel: str, cfg: WorkerSettings, topics: WorkerTopics, *, io: WorkerIO, ledger: Ledger,
                 limiter: RateLimiter, adapter: ChannelAdapter, directory: ContactDirectory,
                 metrics: WorkerMetrics, owner: str | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                 on_close: Sequence[Callable[[], None]] = (), watchdog: CommitWatchdog | None = None,
                 on_hang: Callable[[Hang], None] = exit_process,
                 recs: Callable[[str, int], list[tuple[str, float]]] | None = None) -> None:
        self.channel, self.cfg, self.topics = channel, cfg, topics
        #: ``(person, k)`` → the person's recommendations: fills an action's ``{{recs}}`` params at send time
        #: (docs/recommendations.md); None: such params go out as written.
        self.recs = recs
        self.on_close = list(on_close)
        self.io, self.ledger, self.limiter, self.adapter, self.directory = io, ledger, limiter, adapter, directory
        self.metrics = metrics
        self.owner = owner or f"{channel}-{cfg.instance_id}-{uuid.uuid4().hex[:8]}"
        self.clock, self.sleep, self.rng = clock, sleep, rng or random.Random()
        self.backoff = Backoff(cfg.backoff_base_ms, cfg.backoff_max_ms, cfg.backoff_multiplier, cfg.backoff_jitter)
        self.tracker = OffsetTracker()
        self.parking: ParkingLot[_Item] = ParkingLot()
        self._closed_reason: dict[str, str] = {}
        self.stats = WorkerStats()
        self.watchdog = watchdog or CommitWatchdog(cfg.commit_watchdog_ms / 1000)
        self.on_hang = on_hang
        self.watchdog.watch(self._hung)

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, max_messages: int | None = None, idle_exit_s: float | None = None,
            stop: threading.Event | None = None) -> WorkerStats:
        """Consume and deliver until ``stop`` is set, ``max_messages`` messages are settled, or
        nothing arrived and nothing is pending for ``idle_exit_s`` seconds. Commits before returning."""
        last_activity = self.clock()
        while not (stop is not None and stop.is_set()):
            due = self.parking.pop_due(self._now_ms())
            for item in due:
                self._handle(item)
            # no more than ~30 s of rate-limited work per poll, so the consumer stays in its group
            budget = min(self.cfg.batch_size, max(1, int(self.cfg.rate(self.channel).per_s * 30)))
            if max_messages is not None:
                budget = min(budget, max_messages - self.stats.received)
            if budget <= 0 or len(self.parking) >= self.cfg.max_parked:
                self.io.pause_all()
            else:
                self.io.resume_all()
            msgs = self.io.poll(max(1, budget), self._poll_timeout_s())
            for m in msgs:
                self.stats.received += 1
                self.tracker.add(m.tp, m.offset)
                self._take_in(m)
            self.commit()
            if msgs or due:
                last_activity = self.clock()
            if len(self.tracker) == 0 and len(self.parking) == 0:
                if max_messages is not None and self.stats.received >= max_messages:
                    break
                if idle_exit_s is not None and self.clock() - last_activity >= idle_exit_s:
                    break
        self.commit()
        return self.stats

    def commit(self) -> None:
        """Produce the released receipts/dead letters and commit the offsets, in one transaction."""
        offsets, outputs = self.tracker.drain()
        if offsets or outputs:
            self.watchdog.attempt(commit_label(outputs, offsets), "commit")
            try:
                self.io.commit(outputs, offsets)
            finally:
                self.watchdog.settled()
            self.stats.commits += 1

    def _hung(self, hang: Hang) -> None:
        """The watchdog's thread: a commit is stuck (it cannot be interrupted). Say so, count it, ``on_hang``."""
        logger.critical(
            "worker %s: a Kafka commit (%s) has been stuck in %s for %.1f s, longer than worker.commit_watchdog_ms "
            "(%d; librdkafka can block past its own timeout when the broker went away mid-commit, "
            "confluentinc/librdkafka#5456); the process exits with code %d so that its supervisor restarts it. "
            "Nothing is lost: the transaction is aborted by the broker (or fenced by the restarted worker), its "
            "offsets are not committed, the restart reads those messages again and the ledger keeps what was "
            "delivered from going out twice",
            self.channel, hang.what, hang.step, hang.elapsed_s, self.cfg.commit_watchdog_ms, EXIT_COMMIT_HUNG)
        self.metrics.commit_hung(hang.step)
        self.on_hang(hang)

    def revoked(self, tps: list[TP]) -> None:
        """Partitions are being taken away: commit what is finished, forget the rest (the next
        owner re-reads it; the ledger keeps it from being delivered twice)."""
        self.commit()
        self.lost(tps)

    def lost(self, tps: list[TP]) -> None:
        gone = set(tps)
        self.tracker.drop(gone)
        self.parking.drop(lambda it: it.msg.tp not in gone)

    def close(self) -> None:
        """Close the Kafka clients, the adapter's connections, the directory and ``on_close``."""
        try:
            self.io.close()
        finally:
            self.watchdog.stop()
            self.adapter.close()
            self.directory.close()
            for f in self.on_close:
                f()

    def _src(self, m: InMessage) -> str:
        """Where a message sits, for this consumer group: a re-read by another group (or a copy of
        the topic) is a duplicate, not a replay, and emits no second receipt."""
        return f"{self.cfg.group}/{m.src}"

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _poll_timeout_s(self) -> float:
        t = self.cfg.poll_timeout_ms / 1000
        nd = self.parking.next_due_ms()
        if nd is not None:
            t = min(t, max(0.0, (nd - self._now_ms()) / 1000))
        return t

    # ---- one message ----------------------------------------------------------------------------
    def _take_in(self, m: InMessage) -> None:
        try:
            action = Action.decode(m.value)
            if action.channel != self.channel:
                raise ActionDecodeError(f"channel {action.channel!r} on the {self.channel} topic")
        except ActionDecodeError as e:
            self.stats.invalid += 1
            self.metrics.failed("invalid")
            logger.warning("worker %s: %s at %s goes to %s", self.channel, e, m.src, self.topics.dlq)
            self.tracker.done(m.tp, m.offset, [self._dead_letter(m, f"invalid: {e}", 0, None)])
            return
        self._handle(_Item(m, action))

    def _handle(self, item: _Item) -> None:
        a, now = item.action, self._now_ms()
        try:
            contact = self.directory.lookup(a.person_id)
        except ContactLookupError as e:
            item.lookup_failures += 1
            delay = self.backoff.delay_ms(item.lookup_failures, self.rng)
            logger.warning("worker %s: action %s waits %d ms: %s", self.channel, a.action_id, delay, e)
            self.stats.retried += 1
            self.metrics.retried("contacts")
            self.parking.park(item, now + delay)
            return
        if contact is None and self.channel in CONTACTLESS_CHANNELS:
            contact = Contact(a.person_id)
        suppress = _suppression(self.channel, a, contact, self.adapter)
        dest, closed_until = "", None
        if suppress is None:
            assert contact is not None
            dest = self.adapter.destination(a, contact)
            closed_until = self.parking.closed_until(dest, now)
            if closed_until is None:
                self._take_token()
        claim = self.ledger.claim(a.action_id, self.owner, self._src(item.msg), self._now_ms(), self.cfg.lease_ms)
        if claim.kind == "done":
            self._settled_before(item, claim.record)
        elif claim.kind == "busy":
            self.parking.park(item, claim.record.lease_until_ms + 1)
        elif suppress is not None:
            self._finish(item, claim.record, Outcome("suppressed", reason=suppress))
        elif closed_until is not None:
            # the destination failed moments ago and its retry is not due: this attempt fails with
            # it, without a request (one probe per retry round, not one per parked action)
            closed = DeliveryResult.transient(f"destination closed: {self._closed_reason.get(dest, '')}")
            self._settle(item, dest, claim.record, closed, probed=False, not_before=closed_until)
        else:
            assert contact is not None
            filled = self._filled(a)
            if isinstance(filled, DeliveryResult):
                self._settle(item, dest, claim.record, filled, probed=False)
                return
            t0 = time.perf_counter()
            result = self.adapter.deliver(filled, contact)
            self.metrics.latency(result.status, time.perf_counter() - t0)
            self._settle(item, dest, claim.record, result, probed=True)

    def _filled(self, a: Action) -> Action | DeliveryResult:
        """The action with its ``{{recs}}`` params replaced by the person's list; a failed attempt (transient:
        Redis unavailable, retried like a delivery) or a permanent failure (a k out of range) otherwise."""
        if self.recs is None or not any(isinstance(v, str) and "{{" in v for v in a.params.values()):
            return a
        try:
            return replace(a, params=fill_recs(a.params, a.person_id, self.recs))
        except ValueError as e:
            return DeliveryResult.permanent(f"recs: {e}")
        except Exception as e:  # noqa: BLE001 - the store is down or slow: this attempt fails and is retried
            return DeliveryResult.transient(f"recs: {type(e).__name__}: {e}")

    def _settle(self, item: _Item, dest: str, claimed: Record, result: DeliveryResult, *, probed: bool,
                not_before: int = 0) -> None:
        """Record what attempt number ``claimed.attempts`` came to. ``probed``: the destination was
        really contacted (its answer closes or re-opens it)."""
        a, attempts = item.action, claimed.attempts
        if result.status == "transient" and attempts < self.cfg.max_attempts:
            if self._finish(item, claimed, Outcome("pending", reason=result.reason)) is not None:
                now = self._now_ms()
                due = max(now + self.backoff.delay_ms(attempts, self.rng, result.retry_after_s), not_before)
                if probed:
                    self.parking.close(dest, due)
                    self._closed_reason[dest] = result.reason
                self.parking.park(item, due)
                self.stats.retried += 1
                self.metrics.retried("transient")
                logger.info("worker %s: %s attempt %d failed (%s); retry in %d ms", self.channel, a.action_id,
                            attempts, result.reason, due - now)
            return
        if probed and result.status != "transient":  # the destination answered: open it again
            self.parking.open(dest)
            self._closed_reason.pop(dest, None)
        if result.status == "delivered":
            outcome = Outcome("delivered", provider_id=result.provider_id or a.action_id)
        elif result.status == "suppressed":
            outcome = Outcome("suppressed", reason=result.reason)
        elif result.status == "permanent":
            outcome = Outcome("failed", reason=f"permanent: {result.reason}")
        else:
            outcome = Outcome("failed", reason=f"retries_exhausted after {attempts} attempts: {result.reason}")
        self._finish(item, claimed, outcome)

    def _finish(self, item: _Item, claimed: Record, outcome: Outcome) -> Record | None:
        a, m = item.action, item.msg
        rec = self.ledger.finish(a.action_id, self.owner, outcome, self._now_ms())
        if rec is None:
            # Our lease ran out mid-delivery and another worker took the action over: the outcome
            # is theirs to record and report. (lease_ms > any timeout makes this a pathology.)
            logger.error("worker %s: lost the claim on %s while delivering (lease_ms %d too short?); "
                         "the new holder reports it", self.channel, a.action_id, self.cfg.lease_ms)
            self.tracker.done(m.tp, m.offset)
            return None
        if rec.state == "pending":
            return rec
        self._count(rec)
        self.tracker.done(m.tp, m.offset, self._outputs(item, rec))
        return rec

    def _settled_before(self, item: _Item, rec: Record) -> None:
        m = item.msg
        if rec.src == self._src(m):  # this very message settled it before a crash: re-emit its receipt
            self.stats.replays += 1
            self.metrics.duplicate("replay")
            self.tracker.done(m.tp, m.offset, self._outputs(item, rec))
        else:
            self.stats.duplicates += 1
            self.metrics.duplicate("duplicate")
            self.tracker.done(m.tp, m.offset)

    def _count(self, rec: Record) -> None:
        if rec.state == "delivered":
            self.stats.delivered += 1
            self.stats.in_doubt += rec.in_doubt
            self.metrics.delivered("in_doubt" if rec.in_doubt else "first")
        elif rec.state == "suppressed":
            self.stats.suppressed += 1
            self.metrics.suppressed(rec.reason)
        else:
            self.stats.failed += 1
            self.metrics.failed(rec.reason.split(":", 1)[0].split(" ", 1)[0])

    def _take_token(self) -> None:
        while True:
            wait = self.limiter.try_take(self._now_ms())
            if wait <= 0:
                return
            self.sleep(wait)

    # ---- outputs --------------------------------------------------------------------------------
    def _outputs(self, item: _Item, rec: Record) -> list[OutRecord]:
        a = item.action
        receipt = DeliveryReceipt(a.action_id, a.person_id, self.channel, rec.state, rec.attempts,
                                  rec.provider_id or None, rec.ts_ms, rec.reason or None, a.rule_id, a.campaign)
        out = [OutRecord(self.topics.delivery, a.person_id.encode(), orjson.dumps(receipt.to_json()))]
        if rec.state == "failed":
            out.append(self._dead_letter(item.msg, rec.reason, rec.attempts, a.action_id))
        return out

    def _dead_letter(self, m: InMessage, reason: str, attempts: int, action_id: str | None) -> OutRecord:
        headers: list[tuple[str, str | bytes | None]] = [
            ("reason", reason.encode()), ("source", m.src.encode()), ("attempts", str(attempts).encode())]
        if action_id:
            headers.append(("action_id", action_id.encode()))
        return OutRecord(self.topics.dlq, m.key, m.value or b"", headers)


def _suppression(channel: str, action: Action, contact: Contact | None, adapter: Any = None) -> str | None:
    """Why the action is not sent at all, or None to deliver it. A plugin's adapter may say where its channel
    sends (``address(contact)``, e.g. the openid); the built-in ones use ``Contact.address``."""
    if contact is None:
        return "no_contact"
    if channel in contact.opt_out:
        return "opted_out"
    address = getattr(adapter, "address", None)
    if not (address(contact) if callable(address) else contact.address(channel)):
        return "no_address"
    return None


def build_worker(settings: Settings, channel: str, *, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, on_hang: Callable[[Hang], None] = exit_process) -> ChannelWorker:
    """A worker wired to the configured Kafka, Redis, contact directory and channel adapter.

    Creates the channel's DLQ and the receipts topic when missing. Call ``worker.close()`` when done. A commit
    stuck past ``worker.commit_watchdog_ms`` calls ``on_hang`` (default: the process exits with code 75).
    """
    from connectors.channels import build_adapter
    from connectors.channels.contacts import build_directory
    from connectors.channels.kafka_io import KafkaWorkerIO
    from connectors.channels.redis_state import RedisLedger, RedisTokenBucket, redis_client
    from connectors.kafka_admin import create_topics
    from operators.delivery.ledger import MemoryLedger
    from operators.delivery.ratelimit import LocalTokenBucket

    cfg = settings.worker
    topics = WorkerTopics.of(settings.kafka, channel)
    adapter = build_adapter(channel, cfg, clock, settings.plugins)
    create_topics(settings, [topics.dlq, topics.delivery])
    client = redis_client(settings.redis)
    prefix = settings.redis.prefix
    rate = cfg.rate(channel)
    metrics = WorkerMetrics(channel, registry)

    def redis_retry(_e: BaseException) -> None:
        metrics.retried("redis")

    limiter: RateLimiter = (RedisTokenBucket(client, prefix, channel, rate.per_s, rate.burst, redis_retry)
                            if cfg.shared_rate_limit else LocalTokenBucket(rate.per_s, rate.burst))
    ledger: Ledger = (RedisLedger(client, prefix, channel, cfg.record_ttl_s, redis_retry) if cfg.idempotency
                      else MemoryLedger())
    if not cfg.idempotency:
        logger.warning("worker %s: worker.idempotency is off: actions WILL be delivered twice after a crash",
                       channel)
    holder: dict[str, ChannelWorker] = {}
    watchdog = CommitWatchdog(cfg.commit_watchdog_ms / 1000)
    io = KafkaWorkerIO(
        settings.kafka, topics.actions, cfg.group, f"{channel}-{cfg.instance_id}",
        transactional_id=worker_transactional_id(settings, channel),
        transaction_timeout_ms=cfg.transaction_timeout_ms,
        on_revoke=lambda tps: holder["w"].revoked(tps), on_lost=lambda tps: holder["w"].lost(tps),
        watch=watchdog,
    )
    from connectors.redis_store import RedisStore

    recs_store: list[RedisStore] = []

    def recs(person: str, k: int) -> list[tuple[str, float]]:
        if not recs_store:
            recs_store.append(RedisStore(settings.redis, prefix=prefix))
        return person_recommendations(recs_store[0], person, k)

    def close_recs() -> None:
        for store in recs_store:
            store.close()

    worker = ChannelWorker(channel, cfg, topics, io=io, ledger=ledger, limiter=limiter, adapter=adapter,
                           directory=build_directory(cfg.contacts), metrics=metrics,
                           clock=clock, sleep=sleep, rng=rng, on_close=[client.close, close_recs], watchdog=watchdog,
                           on_hang=on_hang, recs=recs)
    holder["w"] = worker
    return worker
