"""The one frozen, validated configuration tree of zhongtai.

Loaded once at an entry point (``load_settings``) from the shipped ``defaults.yaml``, an optional
user YAML file and ``ZT__``-prefixed environment variables (``ZT__KAFKA__BOOTSTRAP=host:9092``;
a double underscore separates levels). Everything below is passed down in slices; operators never
read the environment themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from config.namespace import apply_namespace, check_namespace, qualify, qualify_pattern
from config.schema import EventSchema, SchemaError, load_schema

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
ENV_PREFIX = "ZT__"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaTopics(_Frozen):
    """Topic names (each one is qualified by ``namespace``: config/namespace.py). ``events`` is a regular
    expression: every topic whose whole name matches is consumed."""

    events: str = r"zt\.events\..*"
    dlq: str = "zt.dlq"
    identity_changes: str = "zt.identity.changes"
    tag_changes: str = "zt.tags.changes"
    actions_prefix: str = "zt.actions."
    control: str = "zt.control"
    control_results: str = "zt.control.results"
    delivery: str = "zt.delivery"
    #: Every control change made through the API (who, what, old and new version, diff): docs/api.md, "Audit".
    audit: str = "zt.audit"
    #: The job's transactional store log is ``<store_log_prefix><consumer group>`` (docs/semantics.md).
    store_log_prefix: str = "zt.store."
    #: Every list-price change and offer decision with its inputs and reasons (docs/pricing.md).
    pricing: str = "zt.pricing"


#: The Kafka client classes inside Flink's SQL connector jar are relocated (shaded) to this package; a JAAS
#: login module named in a Kafka table's ``properties.sasl.jaas.config`` must carry it.
FLINK_KAFKA_SHADED = "org.apache.flink.kafka.shaded."


def _quotable_password(v: SecretStr) -> SecretStr:
    raw = v.get_secret_value()
    if not raw or not raw.isprintable() or any(c in raw for c in "\"\\ "):
        raise ValueError("a password must be printable, without spaces, quotes or backslashes (it is quoted in a "
                         "JAAS line and an ACL rule): generate one with `openssl rand -hex 24`")
    return v


class KafkaSecurity(_Frozen):
    """How every Kafka client of zhongtai authenticates (docs/security.md): the job's Kafka tables, the admin
    client, the applier, the workers, the API, the collector's producer and the control producers all read it
    (``connectors/kafka_security.py`` turns it into client properties).

    ``PLAINTEXT`` (the local stack's default) sends no credentials. ``SASL_PLAINTEXT`` / ``SASL_SSL``
    authenticate ``username`` with SCRAM; ``SSL`` / ``SASL_SSL`` verify the broker against ``ca_file``
    (PEM; empty: the system's CAs). Each component can have its own principal: ``security.components``."""

    protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: str = ""
    password: SecretStr | None = None
    ca_file: str = ""

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @field_validator("password")
    @classmethod
    def _quotable(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is None else _quotable_password(v)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSecurity:
        if self.sasl and (not self.username or self.password is None):
            raise ValueError(f"kafka.security.protocol is {self.protocol} but the SCRAM username or password is "
                             "missing: set kafka.security.username and kafka.security.password (env "
                             "ZT__KAFKA__SECURITY__PASSWORD), or security.components.<component>.kafka")
        return self


class KafkaSettings(_Frozen):
    bootstrap: str = "127.0.0.1:9092"
    topics: KafkaTopics = KafkaTopics()
    consumer_group: str = "zt-job"
    #: Where a new job starts when no checkpoint is restored: earliest | latest.
    start_from: Literal["earliest", "latest"] = "earliest"
    #: Partitions per topic created by ``zhongtai produce`` and the tests.
    partitions: int = Field(2, ge=1)
    #: Transaction timeout asked of the broker by the exactly-once sink (must be ≤ the broker's cap).
    transaction_timeout_ms: int = Field(600_000, ge=1_000)
    security: KafkaSecurity = KafkaSecurity()


class RedisSettings(_Frozen):
    """Where the live store is (``connectors/redis_clients.py`` makes every client from this)."""

    #: ``standalone``: the one server at ``host:port``; ``cluster``: a Redis Cluster reached via ``nodes``.
    mode: Literal["standalone", "cluster"] = "standalone"
    host: str = "127.0.0.1"
    port: int = 6390
    #: Cluster mode: startup nodes ``host:port`` (any reachable ones; the client learns the rest of the
    #: cluster from them). ``zhongtai stack up --redis-cluster`` starts three masters on these.
    #: A comma-separated string is accepted (``ZT__REDIS__NODES=h:7001,h:7002``).
    nodes: tuple[str, ...] = ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")
    db: int = 0
    #: Redis ACL user (``AUTH username password``); None: the ``default`` user (``requirepass``).
    #: Each component can have its own: ``security.components.<component>.redis``.
    username: str | None = None
    password: SecretStr | None = None
    #: Key prefix of every key zhongtai writes (``{prefix}:id:...``).
    prefix: str = "zt"
    #: Time to live of the per-minute counter hashes.
    minute_counter_ttl_s: int = Field(7 * 86_400, ge=60)

    @field_validator("nodes", mode="before")
    @classmethod
    def _split_nodes(cls, v: Any) -> Any:
        return [n.strip() for n in v.split(",") if n.strip()] if isinstance(v, str) else v

    @field_validator("nodes")
    @classmethod
    def _host_port(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for n in v:
            host, sep, port = n.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"redis.nodes entry {n!r}: write it as host:port (port 1-65535)")
        return v

    @model_validator(mode="after")
    def _cluster_needs_nodes_and_db0(self) -> RedisSettings:
        if self.mode == "cluster" and not self.nodes:
            raise ValueError("redis.mode is cluster but redis.nodes is empty: list at least one host:port")
        if self.mode == "cluster" and self.db != 0:
            raise ValueError(f"redis.db is {self.db} but a Redis Cluster has only db 0: set redis.db to 0")
        for ch in "{}":
            if self.mode == "cluster" and ch in self.prefix:
                raise ValueError(f"redis.prefix {self.prefix!r} holds {ch!r}: a Redis Cluster would read it as a "
                                 "hash tag and put every key in one slot; choose a prefix without braces")
        return self


class HBaseSettings(_Frozen):
    host: str = "127.0.0.1"
    #: Thrift1 server port (happybase).
    port: int = 9090
    namespace: str = "zt"
    #: Rows per happybase ``batch()``.
    batch_size: int = Field(1_000, ge=1)
    timeout_ms: int = Field(30_000, ge=100)


class FlinkSettings(_Frozen):
    #: ``mini``: the embedded mini-cluster in this process; ``cluster``: submit to ``rest_url``.
    mode: Literal["mini", "cluster"] = "mini"
    #: Name of the event job (``--job-name`` overrides it per run): names its checkpoint folder
    #: ``<checkpoint dir>/<job name>`` and its Kafka transactional ids; ``zhongtai stop`` finds it by it.
    job_name: str = Field("zhongtai-events", min_length=1)
    rest_url: str = "http://127.0.0.1:8081"
    parallelism: int = Field(1, ge=1)
    checkpoint_interval_ms: int = Field(5_000, ge=100)
    #: ``file://`` URL; empty means ``<run_dir>/checkpoints``.
    checkpoint_dir: str = ""
    #: Heap of the embedded mini-cluster's JVM (``mode: mini``; a cluster's TaskManagers size their own).
    #: Without a bound the JVM takes a quarter of the machine's memory and G1 grows into it (6.8 GB RSS for a
    #: 200k-event bench with ~1 GB live): the heap holds the SQL state (hashmap backend) and the buffers.
    mini_heap_mb: int = Field(1536, ge=256)
    #: Keyed state: ``hashmap`` (on the JVM heap: fastest while the state fits in memory) or ``rocksdb``
    #: (embedded RocksDB on local disk, incremental checkpoints: millions of persons × 90 days beyond
    #: memory; docs/performance.md says which to use at which size).
    state_backend: Literal["hashmap", "rocksdb"] = "hashmap"
    #: Extra Flink options passed as they are (``python.execution-mode``: ``thread``...).
    options: dict[str, str] = {}


class JobSettings(_Frozen):
    """Semantics of the event job (see docs/semantics.md)."""

    #: Payloads larger than this many bytes go to the DLQ as ``oversized``.
    max_event_bytes: int = Field(32_768, ge=256)
    #: ``ts`` more than this far ahead of the Kafka record timestamp is ``future_ts``.
    max_future_skew_ms: int = Field(300_000, ge=0)
    #: Bounded out-of-orderness of the person operator's watermark (its timers: time-based tags, patterns,
    #: journeys, quiet hours): it trails the newest event time by this much. Late events are still applied
    #: (docs/person.md); a pattern waits for late events as long as its own ``lateness`` says.
    watermark_delay_ms: int = Field(5_000, ge=0)
    #: The person operator receives each person's rows in bundles (pipelines/bundles.py): flushed at the
    #: latest after this much processing time (and before every watermark and checkpoint barrier; the job's
    #: periodic watermark interval is set to it too), or at this many pending rows.
    bundle_ms: int = Field(1_000, ge=0)
    #: The person operator's one timer fires up to this long (event time) after the next due time (a tag
    #: flip, a pattern's deadline, a journey's wait): for an active person the due work is done at its next
    #: bundle instead, without a callback per timer. The work itself is dated exactly (docs/person.md).
    timer_slack_ms: int = Field(30_000, ge=0)
    bundle_rows: int = Field(100_000, ge=1)
    #: Events older than watermark minus this go to the DLQ as ``late``.
    allowed_lateness_ms: int = Field(3_600_000, ge=0)
    #: A rejected record's value is cut to this many bytes in the DLQ (and marked ``zt.truncated``): the DLQ
    #: producer may send at most ``max.request.size`` (1 MiB by default) per record; the whole record stays in
    #: its source topic. Keep it below the DLQ topic's ``max.message.bytes`` minus the headers.
    dlq_max_value_bytes: int = Field(524_288, ge=1024)
    #: How long an event_id is remembered for deduplication.
    dedup_ttl_ms: int = Field(86_400_000, ge=60_000)
    #: Idle source partitions stop holding the watermark back after this long.
    source_idle_timeout_ms: int = Field(10_000, ge=100)
    #: Mini-batch aggregation latency bound (JVM side).
    mini_batch_latency_ms: int = Field(1_000, ge=10)
    mini_batch_size: int = Field(20_000, ge=1)
    #: Attribution (rules on; docs/rules_job.md): a purchase converts the last action delivered at most
    #: this long before it; it is decided once the watermark is this much past it (receipts lag).
    attribution_window_ms: int = Field(7 * 86_400_000, ge=1)
    attribution_receipt_delay_ms: int = Field(300_000, ge=0)
    #: Channels whose deliveries can convert (None: every channel).
    attribution_channels: tuple[str, ...] | None = None
    #: Event types routed to the strategy engine besides those its start rule set uses (and consent /
    #: unsubscribe): the types a rule, pattern or journey published at run time (the builder, ``zhongtai rules
    #: publish``) may need. The job's SQL drops every other type before Python (one row per routed event);
    #: a published definition that needs an unrouted type is applied, but its events never reach it until the
    #: job restarts with the type here (docs/rules_job.md). The builder warns about such types.
    rules_event_types: tuple[str, ...] = ()
    #: How the store rows reach Redis and HBase (docs/semantics.md, "Failures and restore"):
    #: ``log`` (default): a transactional Kafka log, applied read_committed by ``zhongtai.services.applier``:
    #: only rows of completed checkpoints are ever written, so values are exact through any failure;
    #: visible one checkpoint interval later. ``direct``: the job writes them itself (sooner, but rows
    #: written after the last checkpoint by a run that then failed may outlive the restore).
    store_mode: Literal["log", "direct"] = "log"
    #: Store-log rows the applier writes per Redis round trip / HBase batch.
    applier_batch: int = Field(5_000, ge=1)


#: The built-in development HMAC secret: accepted only while every service is on this machine (the local
#: stack) or ``security.allow_dev_secrets`` is set (``Settings._no_dev_secret_in_production``).
DEV_HMAC_SECRET = "zhongtai-dev-secret-change-me"


class PiiSettings(_Frozen):
    #: Keyed HMAC secret for phone and e-mail (ASCII). Override it in production.
    hmac_secret: SecretStr = SecretStr(DEV_HMAC_SECRET)
    default_country_code: str = "86"

    @field_validator("hmac_secret")
    @classmethod
    def _ascii_secret(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if not raw or not raw.isascii() or len(raw) > 64:
            raise ValueError("pii.hmac_secret must be 1-64 ASCII characters (generate one with `openssl rand -hex 32`)")
        return v


class IdentitySettings(_Frozen):
    """Guard rails of the identity graph (docs/identity.md; ``operators.identity.rules``)."""

    #: Identifier types, strongest first. The strongest identifier of an event anchors its links; the
    #: weaker side of a rejected link is the one detached.
    priority: tuple[str, ...] = ("user_id", "unionid", "phone", "email", "openid", "device_id", "cookie_id")
    #: Most identifiers of a type one person may hold (every type of ``priority`` needs one, ≥ 1).
    max_per_person: dict[str, int] = {
        "user_id": 1,
        "unionid": 1,
        "phone": 2,
        "email": 3,
        "openid": 5,
        "device_id": 10,
        "cookie_id": 50,
    }
    #: Types that several people can use (a household tablet, a browser). A link through one of them
    #: merges two persons only if no other type is held by both: a device seen with two persons that
    #: each have a phone (an e-mail, an openid, ...) is shared, and is detached (reason ``shared:<type>``).
    #: Types not in ``priority`` play no role (so narrowing ``priority`` needs no change here).
    shareable_types: tuple[str, ...] = ("device_id", "cookie_id")
    #: Junk values never used as identifiers (compared trimmed and lower-cased; for phone and e-mail
    #: the keyed hash of each value is blocked too).
    blocklist_values: tuple[str, ...] = (
        "", "null", "undefined", "none", "nan", "nil", "0", "-1", "anonymous", "unknown", "n/a",
        "(null)", "[object object]", "test",
    )
    #: Regular expressions (full match on the trimmed, lower-cased value) of junk values.
    blocklist_patterns: tuple[str, ...] = (r"[0\-:.]+", r"(.)(?:\1|[\-:.]){3,}")
    #: Longest identifier value (code points, before normalisation) an event may carry; an event with a
    #: longer one goes to the DLQ as ``too_long:ids`` (docs/semantics.md). Caps the input of every
    #: normalisation and blocklist pattern, so no value can make a regular expression run long.
    max_identifier_length: int = Field(256, ge=16, le=4096)

    @field_validator("priority")
    @classmethod
    def _distinct_types(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError("identity.priority must list each identifier type once")
        return v


class StackSettings(_Frozen):
    """The local stack that ``zhongtai stack up`` starts (ignored when pointing at real clusters)."""

    #: Cache for jars fetched from Maven Central (kept across checkouts).
    home: str = "~/.cache/zhongtai"
    #: Data, logs and PID files of the local services (relative to the working directory).
    run_dir: str = ".zt"
    kafka_version: str = "4.1.1"
    hbase_version: str = "2.6.1-hadoop3"
    flink_kafka_connector: str = "org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"
    kafka_heap: str = "512m"
    hbase_heap: str = "1g"
    thrift_heap: str = "384m"
    kafka_controller_port: int = 9093
    zookeeper_port: int = 2181
    #: Redis persistence of the local stack: off (the default; a restarted Redis starts empty), or an
    #: append-only file fsynced every second in ``<run_dir>/data/redis`` like the production deployments
    #: (docker/compose.yaml). The service fault tests turn it on for their private Redis.
    redis_aof: bool = False
    start_timeout_s: int = Field(180, ge=5)


class ChannelRate(_Frozen):
    """Token bucket of one channel: ``per_s`` deliveries per second on average, bursts of ``burst``."""

    per_s: float = Field(50.0, gt=0)
    burst: int = Field(50, ge=1)


class SmtpSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = 25
    #: ``STARTTLS`` after EHLO (set it for any relay that is not on this host).
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    sender: str = "no-reply@zhongtai.local"
    #: Right-hand side of the ``Message-ID: <action_id@domain>`` header.
    message_id_domain: str = "zhongtai.local"
    timeout_s: float = Field(10.0, gt=0)


class HttpProviderSettings(_Frozen):
    """An HTTP delivery endpoint (SMS gateway, push service, coupon service, default webhook)."""

    #: Where actions are POSTed; for webhooks a contact's own ``webhook_url`` wins.
    url: str = ""
    #: ``Authorization: Bearer <token>`` when set.
    token: SecretStr | None = None
    #: HMAC-SHA256 key of the ``X-Zhongtai-Signature`` header (webhooks; empty: no signature).
    signing_secret: SecretStr | None = None
    timeout_s: float = Field(10.0, gt=0)


class ContactsSettings(_Frozen):
    """Where destination addresses are resolved at delivery time (the stream carries none)."""

    kind: Literal["file", "http"] = "file"
    #: ``file``: a YAML or JSON mapping ``person_id -> {email, phone, push_token, webhook_url, opt_out}``.
    path: str = "contacts.yaml"
    #: ``http``: ``GET {url}/{person_id}`` answering that object as JSON, 404 when unknown.
    url: str = ""
    token: SecretStr | None = None
    timeout_s: float = Field(5.0, gt=0)


class WorkerSettings(_Frozen):
    """Channel workers (``zhongtai worker``): delivery of ``zt.actions.<channel>``; docs/workers.md."""

    #: Consumer group; each channel's workers share it (topics differ per channel).
    group: str = "zt-workers"
    #: Stable per worker process of a channel (part of the Kafka transactional id: a restarted
    #: process with the same id fences its dead predecessor and aborts its open transaction).
    instance_id: str = "0"
    batch_size: int = Field(100, ge=1)
    poll_timeout_ms: int = Field(200, ge=1)
    #: Kafka transaction timeout of the receipt/DLQ/offset transactions.
    transaction_timeout_ms: int = Field(60_000, ge=1_000)
    #: A commit attempt (begin, produce, send the offsets, commit) still running after this long is stuck
    #: (librdkafka can block past its own timeouts: docs/workers.md, "When a service goes away"): the
    #: worker logs it and exits with code 75 so that its supervisor restarts it. Above
    #: ``transaction_timeout_ms``: by then the broker has aborted the transaction. 0: no watchdog.
    commit_watchdog_ms: int = Field(90_000, ge=0)
    #: A claim on an action expires after this long; a worker that died holding it is then
    #: presumed dead and the action is re-delivered with the same idempotency key (in doubt).
    lease_ms: int = Field(30_000, ge=1_000)
    #: How long idempotency records live (keep it above the action topics' retention).
    record_ttl_s: int = Field(30 * 86_400, ge=60)
    #: Delivery attempts before an action goes to the dead-letter topic.
    max_attempts: int = Field(5, ge=1)
    backoff_base_ms: int = Field(500, ge=1)
    backoff_max_ms: int = Field(60_000, ge=1)
    backoff_multiplier: float = Field(2.0, ge=1.0)
    #: Share of each delay that is randomised (0: none, 1: full jitter).
    backoff_jitter: float = Field(0.5, ge=0.0, le=1.0)
    #: Parked (waiting for retry) actions above which consumption pauses.
    max_parked: int = Field(10_000, ge=1)
    #: Per-channel rate limits; channels not listed use ``default_rate``.
    default_rate: ChannelRate = ChannelRate()
    rates: dict[str, ChannelRate] = {}
    #: Keep the token bucket in Redis so every worker process of a channel shares it.
    shared_rate_limit: bool = True
    #: The idempotency record. Switching it off breaks at-most-once (tests' negative control only).
    idempotency: bool = True
    #: Prometheus ``/metrics`` port of ``zhongtai worker`` (0: not served).
    metrics_port: int = Field(0, ge=0)
    contacts: ContactsSettings = ContactsSettings()
    smtp: SmtpSettings = SmtpSettings()
    webhook: HttpProviderSettings = HttpProviderSettings()
    sms: HttpProviderSettings = HttpProviderSettings()
    push: HttpProviderSettings = HttpProviderSettings()
    coupon: HttpProviderSettings = HttpProviderSettings()
    #: ``template -> {subject, body}`` with ``$param`` placeholders (``string.Template``).
    templates: dict[str, dict[str, str]] = {}

    @model_validator(mode="after")
    def _watchdog_outlasts_the_transaction(self) -> WorkerSettings:
        if self.commit_watchdog_ms and self.commit_watchdog_ms <= self.transaction_timeout_ms:
            raise ValueError(
                f"worker.commit_watchdog_ms ({self.commit_watchdog_ms}) must exceed worker.transaction_timeout_ms "
                f"({self.transaction_timeout_ms}), or be 0 to switch the watchdog off: a stuck commit is given up "
                "only once the broker has aborted its transaction (raise it, e.g. to "
                f"{self.transaction_timeout_ms + 30_000})"
            )
        return self

    @model_validator(mode="after")
    def _lease_outlives_a_delivery(self) -> WorkerSettings:
        longest = self.contacts.timeout_s + max(
            self.smtp.timeout_s, *(p.timeout_s for p in (self.webhook, self.sms, self.push, self.coupon))
        )
        if self.lease_ms / 1000 <= longest:
            raise ValueError(
                f"worker.lease_ms ({self.lease_ms}) must exceed the longest contact lookup + delivery "
                f"call ({longest:.1f} s), or a slow delivery could be taken over and sent twice"
            )
        return self

    def rate(self, channel: str) -> ChannelRate:
        return self.rates.get(channel, self.default_rate)


class ExperimentSettings(_Frozen):
    """A/B experiments (docs/experiments.md). Control messages go to ``kafka.topics.control``."""

    #: Definitions the job starts from, and the report's fallback when Redis has no meta hash.
    definitions_file: str = "config/experiments.yaml"
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    #: Multiple-comparison correction across treatments x metrics: holm | bh (Benjamini-Hochberg).
    correction: Literal["holm", "bh"] = "holm"
    #: Planned units per comparison: the always-valid intervals are tightest there.
    target_n: int = Field(5000, ge=1)


class RecsSettings(_Frozen):
    """Item-to-item recommendations (docs/recommendations.md): a stage of the job, off unless ``enabled``."""

    enabled: bool = False
    #: Weight of each event type with ``props.item_id`` in a person's vector (other types are ignored).
    weights: dict[str, float] = Field(default_factory=lambda: {"page_view": 1.0, "add_to_cart": 3.0,
                                                                "purchase": 5.0})
    #: Event types whose items are left out of the person's recommendations.
    purchase_types: list[str] = Field(default_factory=lambda: ["purchase"])
    #: A person's window: the last N weighted events; two events pair when at most window_ms apart.
    window_items: int = Field(50, ge=1, le=1000)
    window_ms: int = Field(30 * 86_400_000, gt=0)
    #: Event-time half-life of co-occurrence and norms (0: no decay).
    half_life_ms: int = Field(30 * 86_400_000, ge=0)
    #: Exponent on the neighbour's norm in the asymmetric cosine (0.5: cosine; larger damps popular items).
    damping: float = Field(0.5, ge=0.0, le=1.0)
    max_neighbours: int = Field(100, ge=1, le=2000)
    #: Items per ``{prefix}:rec:item:{item}`` sorted set.
    top_k: int = Field(50, ge=1, le=2000)
    pair_ttl_ms: int = Field(60 * 86_400_000, gt=0)
    person_ttl_ms: int = Field(60 * 86_400_000, gt=0)
    max_purchased: int = Field(50, ge=1, le=1000)


#: The shipped pricing policy, spelled out as config/defaults.yaml spells it (operators/pricing/policy.py reads it).
STANDARD_PRICING_POLICY: dict[str, Any] = {
    "name": "standard", "demand_window_ms": 3_600_000,
    "demand_weights": {"page_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}, "min_demand": 10.0,
    "surge_trend": 2.0, "surge_pct": 0.05, "slump_trend": 0.5, "slump_pct": 0.05, "low_stock_qty": 5,
    "low_stock_pct": 0.05, "overstock_qty": 1000, "overstock_pct": 0.05, "competitor_stale_ms": 86_400_000,
    "competitor_sane": [0.5, 2.0],
    "rails": {"*": {"min_margin": 0.05, "max_markup": 0.20, "max_discount": 0.30, "max_step_per_hour": 0.10,
                    "max_offer_discount": 0.20, "respect_map": True, "competitor_mode": "match",
                    "competitor_tolerance": 0.0}},
}


class PricingSettings(_Frozen):
    """Dynamic list prices and personal offers (docs/pricing.md): a stage of the job, off unless ``enabled``."""

    enabled: bool = False
    #: Personalised list prices (a different list price for identical conditions) are refused, and this
    #: setting has no other value: E-commerce Law of the PRC art. 18, SAMR 2021 rules. Use offers instead.
    personalised_list_prices: Literal["refused"] = "refused"
    #: Prices are decided at event-time ticks on multiples of this (and demand is bucketed by it).
    tick_ms: int = Field(900_000, ge=60_000, le=86_400_000)
    #: An item's state is dropped this long after its last input (event time).
    item_ttl_ms: int = Field(90 * 86_400_000, gt=0)
    #: The control version of the configured set; a control message must carry a higher one.
    version: int = Field(1, ge=1)
    default: str = "standard"
    #: The policies (operators/pricing/policy.py: name, demand/stock/competitor rules, rails per category);
    #: parsed when the job is built (``pipelines.pricing.pricing_context``: config cannot import operators).
    policies: list[dict[str, Any]] = Field(default_factory=lambda: [dict(STANDARD_PRICING_POLICY)])
    #: An experiment (experiments.definitions_file, unit item) whose variants map to policies in ``variants``.
    experiment: str | None = None
    variants: dict[str, str] = Field(default_factory=dict)
    #: Offers are asked for by rule actions of this channel with ``params.offer: true``.
    offer_channel: str = "coupon"
    #: An offer's validity when the action does not say (``params.valid_ms``).
    offer_valid_ms: int = Field(7 * 86_400_000, gt=0)
    #: ``{prefix}:offers:{person}`` expires this long after its last write (the API drops expired offers).
    offer_key_ttl_s: int = Field(30 * 86_400, gt=0)

    @field_validator("personalised_list_prices", mode="before")
    @classmethod
    def _refused(cls, v: Any) -> Any:
        if v != "refused":
            raise ValueError("pricing.personalised_list_prices can only be 'refused': a different list price for "
                             "identical conditions is unlawful (E-commerce Law of the PRC art. 18, SAMR 2021 rules "
                             "on big-data price discrimination); give a person an offer instead (docs/pricing.md)")
        return v


class ArchiveSettings(_Frozen):
    """The archive (docs/warehouse.md): every event and decision of the job as Parquet files partitioned by day,
    written by a stage of the job and committed on each checkpoint; off unless ``enabled``."""

    enabled: bool = False
    #: The warehouse's URL (``file:///…``, ``hdfs://…``, ``s3://…``); empty: ``<stack.home>/warehouse``,
    #: in the configuration's namespace.
    path: str = ""
    #: A part file is closed (and committed at the next checkpoint) at this size or age, whichever comes first.
    rolling_file_size: str = "128MB"
    rollover_interval: str = "15 min"
    #: Hadoop's client jars that Flink's Parquet writer needs (fetched from Maven Central, connectors/archive.py).
    hadoop_version: str = "3.4.1"

    @field_validator("path")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("file://", "hdfs://", "s3://", "s3a://", "oss://", "gs://", "abfs://")):
            raise ValueError("archive.path must be a URL such as file:///abs/warehouse or s3://bucket/warehouse")
        return v


class ApiSettings(_Frozen):
    """``zhongtai api`` (docs/api.md). With ``token`` set (or env ``ZT_API_TOKEN``), every route but
    ``/healthz`` needs ``Authorization: Bearer <token>``."""

    host: str = "127.0.0.1"
    port: int = Field(8800, ge=1, le=65535)
    #: The legacy single bearer token: it acts as an ``admin`` key (key id ``api.token`` in the logs).
    token: SecretStr | None = None
    #: Require an API key (``zhongtai keys create``) on every route but ``/healthz`` and ``/openapi.json``,
    #: also when no ``token`` is set. With a ``token`` set, keys are always accepted beside it.
    require_keys: bool = False
    #: Each key's token bucket unless the key has its own (``zhongtai keys create --per-s --burst``); 429 beyond.
    rate: ChannelRate = ChannelRate(per_s=20.0, burst=40)
    #: Largest request body (bytes); larger requests get 413.
    max_body_bytes: int = Field(1_048_576, ge=1024)
    #: One JSON line per request on the ``zhongtai.api.access`` logger (key id, route template, status, latency).
    access_log: bool = True


class WriteKey(_Frozen):
    """One write key of the collector: whoever sends it writes events of ``source``."""

    #: The secret a sender presents (HTTP Basic user, ``X-Zt-Write-Key`` or the body's ``writeKey``).
    key: SecretStr
    #: The envelope's ``source`` of every event sent with this key (``web``, ``app``, ``store``, ``crm``...).
    source: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")

    @field_validator("key")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if len(raw) < 8 or not raw.isascii() or ":" in raw or not raw.isprintable():
            raise ValueError("collector.write_keys[].key must be at least 8 printable ASCII characters without ':' "
                             "(generate one with `openssl rand -hex 16`)")
        return v


class CollectorSettings(_Frozen):
    """``zhongtai collect``: the HTTP event collector and its browser SDK (docs/collector.md)."""

    host: str = "127.0.0.1"
    port: int = Field(8900, ge=1, le=65535)
    #: Where accepted events are written (qualified by ``namespace``); keep it matched by
    #: ``kafka.topics.events`` so that the job reads it.
    topic: str = "zt.events.collector"
    #: Who may send: each key names the ``source`` its events get. No key: ``zhongtai collect`` refuses to start.
    write_keys: tuple[WriteKey, ...] = ()
    #: Origins whose pages may call the collector from a browser (CORS); ``*``: any. Requests carrying
    #: another ``Origin`` are refused with 403.
    cors_origins: tuple[str, ...] = ()
    #: Largest request body (bytes); larger requests get 413. Each event is further capped at
    #: ``job.max_event_bytes`` once mapped (``oversized``).
    max_body_bytes: int = Field(524_288, ge=1024)
    #: Also accept the API's keys (``zhongtai keys create --role collector --source web``) that hold
    #: ``collect:write``, looked up in Redis under ``redis.prefix`` on each request (a revoked key is refused
    #: at once); the key's ``source`` names its events' source.
    api_keys: bool = False
    #: Most events per ``/v1/batch`` request.
    max_batch_events: int = Field(500, ge=1)
    #: How long the producer tries to deliver an event before the request gets 503 (librdkafka
    #: ``message.timeout.ms``); the request waits for the delivery reports at most this long.
    delivery_timeout_ms: int = Field(10_000, ge=100)
    #: Events the producer may hold in memory; beyond it requests get 503 at once.
    queue_max_events: int = Field(100_000, ge=100)
    #: librdkafka ``linger.ms``: how long the producer gathers events into one request to the broker.
    linger_ms: int = Field(5, ge=0)
    #: The ``Retry-After`` (seconds) of a 503.
    retry_after_s: int = Field(5, ge=1)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: Any) -> Any:
        return [o.strip() for o in v.split(",") if o.strip()] if isinstance(v, str) else v


class Credentials(_Frozen):
    """A user name and its password (a Kafka SCRAM principal or a Redis ACL user)."""

    username: str = Field(min_length=1)
    password: SecretStr

    @field_validator("password")
    @classmethod
    def _quotable(cls, v: SecretStr) -> SecretStr:
        return _quotable_password(v)


class ComponentCredentials(_Frozen):
    """What one component authenticates as; None: the shared ``kafka.security`` / ``redis`` credentials."""

    kafka: Credentials | None = None
    redis: Credentials | None = None


#: The processes that can have credentials of their own (docs/security.md lists the ACLs each needs).
#: ``job`` is the event job (``zhongtai run`` also runs its applier in-process with them); ``admin`` every
#: other verb (``stack``, ``produce``, ``rules publish``, ``names`` ...).
Component = Literal["job", "applier", "api", "worker", "collector", "admin"]


class SecuritySettings(_Frozen):
    """Credentials per component and the production guard (docs/security.md)."""

    #: Accept the built-in development ``pii.hmac_secret`` although a service is not on this machine (a demo
    #: with docker compose). Never in production: pseudonyms made with a public secret can be reversed.
    allow_dev_secrets: bool = False
    #: Per component: its Kafka SCRAM principal and Redis ACL user (``Settings.for_component`` picks one);
    #: ``ZT__SECURITY__COMPONENTS__API__REDIS__PASSWORD=...``.
    components: dict[Component, ComponentCredentials] = {}


def _is_local(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


class Settings(_Frozen):
    #: Puts every shared name (topics, groups, transactional ids, Redis prefix, HBase tables, job name) of
    #: this configuration in its own namespace: ``load_settings`` qualifies them (config/namespace.py).
    #: Empty: the names as configured.
    namespace: str = ""
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    hbase: HBaseSettings = HBaseSettings()
    flink: FlinkSettings = FlinkSettings()
    job: JobSettings = JobSettings()
    pii: PiiSettings = PiiSettings()
    identity: IdentitySettings = IdentitySettings()
    stack: StackSettings = StackSettings()
    worker: WorkerSettings = WorkerSettings()
    experiments: ExperimentSettings = ExperimentSettings()
    api: ApiSettings = ApiSettings()
    recs: RecsSettings = RecsSettings()
    pricing: PricingSettings = PricingSettings()
    archive: ArchiveSettings = ArchiveSettings()
    #: The declared event schema's file (docs/schema.md); empty: the shipped config/schema.yaml.
    schema_file: str = ""
    #: The declared event schema, read from ``schema_file`` by :func:`load_settings` (shipped to the job's
    #: operators with the rest of the settings).
    event_schema: EventSchema = EventSchema()
    collector: CollectorSettings = CollectorSettings()
    #: Each plugin's own section, ``plugins.NAME`` (config/plugins.py, docs/plugins.md): validated by the plugin's
    #: ``config_model`` where the plugin runs (its worker or enricher, and ``zhongtai plugins list``).
    plugins: dict[str, dict[str, Any]] = {}
    security: SecuritySettings = SecuritySettings()

    @field_validator("namespace")
    @classmethod
    def _valid_namespace(cls, v: str) -> str:
        return check_namespace(v)

    @model_validator(mode="after")
    def _custom_ids_have_a_rank(self) -> Settings:
        missing = [t for t in self.event_schema.identifiers if t not in self.identity.priority]
        if missing:
            raise ValueError(f"identifier types {', '.join(missing)} are declared in the schema but not ranked: add "
                             "each to identity.priority (strongest first) and identity.max_per_person")
        unlimited = [t for t in self.event_schema.identifiers if t not in self.identity.max_per_person]
        if unlimited:
            raise ValueError(f"identifier types {', '.join(unlimited)} have no identity.max_per_person: add the most "
                             "identifiers of that type one person may hold (e.g. member_card: 1)")
        return self

    def remote_services(self) -> list[str]:
        """The configured services that are not on this machine (``kafka.bootstrap``, Redis, HBase)."""
        addrs = [("kafka.bootstrap", a.strip()) for a in self.kafka.bootstrap.split(",") if a.strip()]
        if self.redis.mode == "cluster":
            addrs += [("redis.nodes", n) for n in self.redis.nodes]
        else:
            addrs.append(("redis.host", f"{self.redis.host}:{self.redis.port}"))
        addrs.append(("hbase.host", f"{self.hbase.host}:{self.hbase.port}"))
        return [f"{key} {addr}" for key, addr in addrs if not _is_local(addr.rpartition(":")[0] or addr)]

    @model_validator(mode="after")
    def _no_dev_secret_in_production(self) -> Settings:
        if self.pii.hmac_secret.get_secret_value() != DEV_HMAC_SECRET or self.security.allow_dev_secrets:
            return self
        remote = self.remote_services()
        if remote:
            raise ValueError(
                f"pii.hmac_secret is the built-in development secret, but {remote[0]} is not on this machine: set "
                "your own secret in pii.hmac_secret (env ZT__PII__HMAC_SECRET; generate one with `openssl rand -hex "
                "32`) before identities reach a shared Kafka or Redis, or set security.allow_dev_secrets: true for "
                "a throw-away demo (docs/security.md)"
            )
        return self

    def for_component(self, component: Component) -> Settings:
        """These settings as ``component`` uses them: its own Kafka principal and Redis user (when
        ``security.components`` names them) in ``kafka.security`` and ``redis``, and no other component's
        credentials (the job ships its settings to every TaskManager: only its own go)."""
        own = self.security.components.get(component, ComponentCredentials())
        kafka_sec = self.kafka.security
        if own.kafka is not None:
            kafka_sec = kafka_sec.model_copy(update={"username": own.kafka.username, "password": own.kafka.password})
        redis = self.redis
        if own.redis is not None:
            redis = redis.model_copy(update={"username": own.redis.username, "password": own.redis.password})
        return self.model_copy(update={
            "kafka": self.kafka.model_copy(update={"security": kafka_sec}),
            "redis": redis,
            "security": self.security.model_copy(update={"components": {}}),
        })

    @field_validator("flink")
    @classmethod
    def _checkpoint_url(cls, v: FlinkSettings) -> FlinkSettings:
        if v.checkpoint_dir and not v.checkpoint_dir.startswith(("file://", "s3://", "hdfs://")):
            raise ValueError("flink.checkpoint_dir must be a URL such as file:///abs/path")
        return v

    @property
    def run_dir(self) -> Path:
        return Path(self.stack.run_dir).expanduser().resolve()

    @property
    def home(self) -> Path:
        return Path(self.stack.home).expanduser().resolve()

    def checkpoint_url(self) -> str:
        return self.flink.checkpoint_dir or (self.run_dir / "checkpoints").as_uri()

    def in_namespace(self, name: str) -> str:
        """``name`` (a topic, group, job name, key prefix, folder) in this configuration's namespace."""
        return qualify(self.namespace, name)

    def pattern_in_namespace(self, pattern: str) -> str:
        """A topic pattern in this configuration's namespace (matches the :meth:`in_namespace` topics)."""
        return qualify_pattern(self.namespace, pattern)


class ConfigError(ValueError):
    """A configuration file or variable is wrong; the message names where and what to do."""


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _env_tree(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return tree


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: pass an existing --config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults, then the YAML file at ``path``, then ``ZT__`` variables, then ``overrides``; then, when the
    result has a ``namespace``, every shared name qualified by it (config/namespace.py)."""
    data = _read_yaml(DEFAULTS_FILE)
    if path:
        data = _deep_merge(data, _read_yaml(Path(path)))
    data = _deep_merge(data, _env_tree(os.environ if env is None else env))
    if overrides:
        data = _deep_merge(data, overrides)
    if "event_schema" not in data:
        try:
            data["event_schema"] = load_schema(data.get("schema_file") or None).model_dump()
        except SchemaError as e:
            raise ConfigError(str(e)) from None
    try:
        settings = Settings.model_validate(data)
        if not settings.namespace:
            return settings
        return Settings.model_validate(apply_namespace(settings.model_dump()))
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        src = f" (from {path})" if path else ""
        raise ConfigError("invalid configuration" + src + ":\n" + "\n".join(lines)) from None


def _reveal(obj: Any) -> Any:
    if isinstance(obj, SecretStr):
        return obj.get_secret_value()
    if isinstance(obj, dict):
        return {k: _reveal(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_reveal(v) for v in obj]
    return obj


def settings_to_json(settings: Settings) -> str:
    """Serialise with secrets revealed, for shipping to Flink workers (never log the result)."""
    import json

    return json.dumps(_reveal(settings.model_dump(mode="python")))


def settings_from_json(text: str) -> Settings:
    """The settings a job shipped to its operators (:func:`settings_to_json`), read back in ``open()``.

    In thread mode a TaskManager keeps ONE Python interpreter for its whole life, and with it the zhongtai
    modules the first job imported; a job of a newer zhongtai then meets an older ``Settings`` here, which
    rejects the keys it does not know. That case raises :class:`ConfigError` saying what to do.
    """
    try:
        return Settings.model_validate_json(text)
    except ValidationError as e:
        unknown = sorted(".".join(str(p) for p in err["loc"]) for err in e.errors() if err["type"] == "extra_forbidden")
        if not unknown:
            raise
        raise ConfigError(
            f"this job's settings have keys that the zhongtai modules loaded in this Python interpreter "
            f"({__file__}) do not know: {', '.join(unknown)}. The TaskManager still runs the modules an earlier "
            "job imported (thread mode keeps them for the TaskManager's life): restart the TaskManagers, "
            "then submit the job again."
        ) from None
