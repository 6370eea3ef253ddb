"""Write a generated stream to Kafka and the oracle's answer next to it.

``produce(settings, cfg)``
  1. creates the topics that are missing (``settings.kafka.partitions`` partitions, replication 1)
     and checks every topic has at least ``cfg.partitions`` partitions;
  2. produces every record with its own partition and CreateTime timestamp, in stream order, from an
     idempotent producer (``enable.idempotence``: no reordering or duplication by retries, so each
     partition's offset order is the stream's order);
  3. regenerates the same stream (it is deterministic), runs the oracle over it and writes
     ``<run_dir>/expected/<name>.json`` — after producing, or in a child process meanwhile, or not at
     all (the ``expected`` argument) — and checks that both passes saw the same bytes (a CRC-32 over
     all values).

The expected file is the oracle's result plus ``meta`` (config, limits, per-kind counts, digest).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import orjson

from config.schema import EventSchema
from config.settings import JobSettings, PiiSettings, Settings
from connectors.kafka_security import client_config

from .model import GeneratorConfig
from .oracle import Oracle, resolve_persons
from .stream import generate

__all__ = ["ProduceError", "ProduceReport", "produce", "write_expected"]


class ProduceError(RuntimeError):
    """Producing failed; the message names the topic/partition or the broker and what to check."""


@dataclass(frozen=True)
class ProduceReport:
    name: str
    records: int
    bytes: int
    #: Records per kind (``ok``, ``dup``, DLQ reasons).
    kinds: dict[str, int]
    topics: tuple[str, ...]
    #: Wall time from the first record handed to the producer until every record was acknowledged.
    seconds: float
    #: ``<run_dir>/expected/<name>.json``; None when produced with ``expected="none"``.
    expected_path: Path | None
    #: Wall time of computing the expected results (0 with ``expected="none"``).
    oracle_seconds: float
    #: CRC-32 of all record values in stream order (hex); the same in ``expected.meta.digest``.
    digest: str
    created_topics: tuple[str, ...] = field(default=())

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0


def write_expected(cfg: GeneratorConfig, job: JobSettings, pii: PiiSettings, path: Path,
                   schema: EventSchema | None = None) -> tuple[str, float]:
    """Regenerate the stream, run the oracle (decoding with the declared ``schema``), write ``path``
    atomically; return (digest, seconds)."""
    t0 = time.perf_counter()
    # Profiles are per person: a first pass resolves the identity graph (batch, guard-railed).
    resolved, person_of = resolve_persons(generate(cfg, job), job, pii, schema)
    oracle = Oracle(job, pii, person_of, schema)
    crc = 0
    kinds: dict[str, int] = {}
    n = 0
    for r in generate(cfg, job):
        crc = zlib.crc32(r.value, crc)
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
        n += 1
        oracle.feed(r.value, r.timestamp_ms)
    digest = f"{crc:08x}"
    meta = {
        "generator": cfg.model_dump(mode="json"),
        "job": job.model_dump(mode="json"),
        "records": n,
        "digest": digest,
        "kinds": dict(sorted(kinds.items())),
        "topics": cfg.topics(),
    }
    out = {"meta": meta, **oracle.result(), "identity": resolved}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(out))
    os.replace(tmp, path)
    return digest, time.perf_counter() - t0


def _child_main() -> None:
    """Entry of the child process: JSON arguments on stdin, ``{"digest", "seconds"}`` on stdout."""
    args = orjson.loads(sys.stdin.buffer.read())
    digest, seconds = write_expected(
        GeneratorConfig.model_validate(args["cfg"]),
        JobSettings.model_validate(args["job"]),
        PiiSettings.model_validate(args["pii"]),
        Path(args["path"]),
        EventSchema.model_validate(args["schema"]),
    )
    sys.stdout.write(orjson.dumps({"digest": digest, "seconds": seconds}).decode())


class _ExpectedChild:
    """``write_expected`` in a fresh interpreter (a plain subprocess: no re-import of the caller's
    ``__main__`` as multiprocessing's spawn would do). Started before the producer exists."""

    def __init__(self, cfg: GeneratorConfig, job: JobSettings, pii: PiiSettings, path: Path,
                 schema: EventSchema) -> None:
        root = str(Path(__file__).resolve().parents[3])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from zhongtai.devtools.generator.produce import _child_main; _child_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        args = {
            "cfg": cfg.model_dump(mode="json"),
            "job": job.model_dump(mode="json"),
            "pii": {
                "hmac_secret": pii.hmac_secret.get_secret_value(),
                "default_country_code": pii.default_country_code,
            },
            "path": str(path),
            "schema": schema.model_dump(mode="json"),
        }
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(args))
        self.proc.stdin.close()

    def result(self) -> tuple[str, float]:
        out = self.proc.stdout.read() if self.proc.stdout else b""
        if self.proc.wait() != 0:
            raise ProduceError(
                f"computing the expected results failed (exit {self.proc.returncode}); "
                "see the traceback above"
            )
        res = orjson.loads(out)
        return res["digest"], res["seconds"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _ensure_topics(settings: Settings, cfg: GeneratorConfig, timeout_s: float = 30.0) -> list[str]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = settings.kafka.bootstrap
    admin = AdminClient(client_config(settings.kafka))
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except KafkaException as e:
        raise ProduceError(f"cannot reach Kafka at {bootstrap}: {e}; is it up (`zhongtai stack up`)?") from e
    missing = [t for t in cfg.topics() if t not in meta.topics]
    created = []
    if missing:
        n = max(settings.kafka.partitions, cfg.partitions)
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=n, replication_factor=1) for t in missing],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for topic, fut in futures.items():
            try:
                fut.result()
                created.append(topic)
            except KafkaException as e:
                if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise ProduceError(
                        f"creating topic {topic!r} on {bootstrap} failed: {e.args[0].str()}"
                    ) from e
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # metadata propagates asynchronously
            meta = admin.list_topics(timeout=timeout_s)
            if all(t in meta.topics and meta.topics[t].partitions for t in cfg.topics()):
                break
            time.sleep(0.1)
    for t in cfg.topics():
        have = len(meta.topics[t].partitions) if t in meta.topics else 0
        if have < cfg.partitions:
            raise ProduceError(
                f"topic {t!r} has {have} partitions but the generator spreads records over "
                f"{cfg.partitions}; use another topic_prefix or GeneratorConfig(partitions={have})"
            )
    return created


class _Progress:
    """The producer's progress on the CLI's common display (``zhongtai.progress``)."""

    def __init__(self, total: int, enabled: bool, out: TextIO = sys.stderr) -> None:
        from zhongtai.progress import Bar

        self.bar = Bar("produce", total, enabled=enabled, out=out).__enter__()

    def show(
        self, done: int, nbytes: int, note: str = "", force: bool = False, seconds: float | None = None
    ) -> None:
        self.bar.update(done, f"{nbytes / 1e6:,.1f} MB {note}")

    def done(self) -> None:
        self.bar.__exit__()


def _send_all(
    settings: Settings, cfg: GeneratorConfig, bar: _Progress
) -> tuple[int, int, str, dict[str, int], float]:
    """Produce the stream in order; returns (records, bytes, digest, kinds, seconds until all acked)."""
    from confluent_kafka import KafkaException, Producer

    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None and len(errors) < 20:
            errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    producer = Producer(
        {
            **client_config(settings.kafka),
            # Idempotence: retries neither reorder nor duplicate, so offsets follow the stream order.
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
            "batch.size": 1_000_000,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "delivery.report.only.error": True,
            "on_delivery": on_delivery,
        }
    )
    send, poll = producer.produce, producer.poll
    crc = nbytes = n = 0
    kinds: dict[str, int] = {}
    t0 = time.perf_counter()
    for topic, partition, key, value, ts, kind in generate(cfg, settings.job):
        try:
            send(topic, value, key, partition, timestamp=ts)
        except BufferError:
            while True:
                poll(0.05)
                try:
                    send(topic, value, key, partition, timestamp=ts)
                    break
                except BufferError:
                    continue
        crc = zlib.crc32(value, crc)
        nbytes += len(value)
        kinds[kind] = kinds.get(kind, 0) + 1
        n += 1
        if not n & 0x1FFF:
            poll(0)
            bar.show(n, nbytes)
            if errors:
                break
    bar.show(n, nbytes, "flushing", force=True)
    try:
        while producer.flush(1.0):
            bar.show(n, nbytes, f"flushing ({len(producer)} in flight)")
    except KafkaException as e:
        errors.append(str(e))
    seconds = time.perf_counter() - t0
    if errors:
        bar.done()
        raise ProduceError(f"Kafka at {settings.kafka.bootstrap} rejected records: " + "; ".join(errors))
    return n, nbytes, f"{crc:08x}", dict(sorted(kinds.items())), seconds


def produce(
    settings: Settings,
    cfg: GeneratorConfig,
    *,
    name: str | None = None,
    progress: bool = True,
    expected: Literal["after", "parallel", "none"] = "after",
) -> ProduceReport:
    """Produce ``cfg``'s stream to ``settings.kafka.bootstrap`` and write the expected results.

    ``expected``: ``after`` computes them once every record is acknowledged (the default: on this
    2-core machine producing then runs at ~170k rec/s against ~75k with ``parallel``, and the total is
    shorter too); ``parallel`` in a child process while producing (for machines with cores to spare);
    ``none`` skips them (``expected_path`` is then None). Returns a :class:`ProduceReport`. Raises
    :class:`ProduceError` when Kafka is unreachable, a topic has too few partitions, a record is not
    acknowledged, or the oracle saw other bytes.
    """
    name = name or cfg.default_name()
    path = settings.run_dir / "expected" / f"{name}.json"
    child = _ExpectedChild(cfg, settings.job, settings.pii, path, settings.event_schema) if expected == "parallel" else None
    bar = _Progress(cfg.events, progress)
    try:
        created = _ensure_topics(settings, cfg)
        n, nbytes, digest, kinds, seconds = _send_all(settings, cfg, bar)
        note = f"in {seconds:.1f} s"
        bar.show(
            n,
            nbytes,
            note + "; computing the expected results" if expected != "none" else note,
            force=True,
            seconds=seconds,
        )
        oracle_digest, oracle_seconds = digest, 0.0
        if child is not None:
            oracle_digest, oracle_seconds = child.result()
        elif expected == "after":
            oracle_digest, oracle_seconds = write_expected(cfg, settings.job, settings.pii, path,
                                                           settings.event_schema)
        if expected != "none":
            bar.show(
                n, nbytes, f"{note}; expected results in {oracle_seconds:.1f} s", force=True, seconds=seconds
            )
        bar.done()
    finally:
        if child is not None:
            child.kill()
    if oracle_digest != digest:
        raise ProduceError(
            f"the oracle regenerated other bytes (digest {oracle_digest} vs {digest}): the generator is "
            "not deterministic; the expected file does not describe what was produced"
        )
    return ProduceReport(
        name=name,
        records=n,
        bytes=nbytes,
        kinds=kinds,
        topics=tuple(cfg.topics()),
        seconds=seconds,
        expected_path=path if expected != "none" else None,
        oracle_seconds=oracle_seconds,
        digest=digest,
        created_topics=tuple(created),
    )
