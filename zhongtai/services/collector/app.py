"""The collector: an ASGI (Starlette) app that takes Segment-like events over HTTP and writes them to Kafka.

Routes (docs/collector.md):

- ``POST /v1/track``, ``/v1/identify``, ``/v1/page``: one message; ``POST /v1/batch``: ``{"batch": [...]}``.
  Each message is mapped onto the envelope (:mod:`.mapping`) and validated by the job's own decode
  (:meth:`Collector.validate`); the valid ones are written to ``collector.topic`` and acknowledged by Kafka
  before the answer. 200 ``{"accepted": n}``; 400 with ``rejected: [{index, messageId, reason, message}]``
  when any is rejected (the valid rest of a batch *is* written and counted in ``accepted``); 401 without a
  known write key; 403 from an origin not in ``collector.cors_origins``; 413 over ``collector.max_body_bytes``
  or ``collector.max_batch_events``; 503 + ``Retry-After`` when Kafka cannot take them.
- ``GET /sdk/zt.js``: the browser SDK; ``GET /healthz`` (Kafka up or down, what the producer holds, the
  answering process); ``GET /metrics`` (Prometheus).

Write keys: HTTP Basic with the key as the user (Segment's ``writeKey``), the ``X-Zt-Write-Key`` header, or
``writeKey`` in the body (``navigator.sendBeacon`` cannot set headers). The key decides the envelope's
``source``. Keys are compared in constant time and never logged.

Nothing connects at import time or in :func:`create_app`: the producer is made when the app starts
(its lifespan) and flushed when it stops.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from connectors.api_keys import RedisApiKeys
from connectors.event_producer import EventProducer, ProducerUnavailable
from operators.envelope import DecodedFields, Pseudonyms, decode_full

from .mapping import Mapped, Rejection, explain, parse_json, to_envelope

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

logger = logging.getLogger(__name__)

SDK_FILE = Path(__file__).with_name("zt.js")
WRITE_KEY_HEADER = "x-zt-write-key"
#: Latency buckets (seconds): a request waits for Kafka's acknowledgement (linger + a round trip).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def _error(status: int, message: str, **details: Any) -> JSONResponse:
    return JSONResponse({"error": message, **details}, status_code=status)


class CollectorMetrics:
    """The app's own registry (several apps in one process never collide)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.accepted = Counter("zhongtai_collector_accepted", "Events written to Kafka and acknowledged, by source",
                                ["source"], registry=r)
        self.rejected = Counter("zhongtai_collector_rejected", "Events rejected with a 400, by source and reason",
                                ["source", "reason"], registry=r)
        self.unavailable = Counter("zhongtai_collector_unavailable", "Requests answered 503, by cause "
                                   "(kafka_down, queue_full, delivery_failed, timeout)", ["cause"], registry=r)
        self.requests = Counter("zhongtai_collector_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("zhongtai_collector_request_seconds", "Time to answer a POST (includes Kafka's "
                                 "acknowledgement), by route", ["route"], buckets=LATENCY_BUCKETS, registry=r)


class Collector:
    """What the routes share: settings, write keys, the decode's pseudonyms, the producer and the metrics."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.settings = settings
        self.topic = topic or settings.collector.topic
        self.keys = [(k.key.get_secret_value().encode(), k.source) for k in settings.collector.write_keys]
        self.api_keys = RedisApiKeys(settings.redis) if settings.collector.api_keys else None
        self.pseudonyms = Pseudonyms.of(settings)
        self.metrics = CollectorMetrics()
        self.producer: EventProducer | None = None
        origins = settings.collector.cors_origins
        self.any_origin = "*" in origins
        self.origins = frozenset(o.rstrip("/") for o in origins)

    def validate(self, value: bytes, received_ms: int) -> DecodedFields | str:
        """The job's decode of one mapped event (``received_ms`` is its Kafka record timestamp): the decoded
        fields, or the DLQ reason the job would give it."""
        return decode_full(value, received_ms, self.settings.job, self.pseudonyms)

    def source_of(self, key: str | None) -> str | None:
        """The source of a write key; None when unknown (every key is compared, in constant time)."""
        if not key:
            return None
        given, found = key.encode("utf-8", "replace"), None
        for secret, source in self.keys:
            if hmac.compare_digest(given, secret):
                found = source
        return found

    def api_key_source(self, key: str | None) -> str | None:
        """The source of an API key holding ``collect:write`` (``collector.api_keys``): its own, else ``api``;
        None when API keys are off, or the key is unknown, revoked or lacks the scope. Reads Redis."""
        from zhongtai.services.api.keys import allows, parse, secret_matches

        parsed = parse(key) if key and self.api_keys is not None else None
        if parsed is None or self.api_keys is None:
            return None
        rec = self.api_keys.get(parsed[0])
        if rec is None or rec.revoked_ms is not None or not secret_matches(parsed[1], rec.digest):
            return None
        return (rec.source or "api") if allows(rec.scopes, "collect:write") else None

    def origin_allowed(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or self.any_origin or origin.rstrip("/") in self.origins:
            return True
        return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"  # same origin


def _header_key(request: Request) -> str | None:
    given = request.headers.get(WRITE_KEY_HEADER)
    if given:
        return given
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            return None
    return None


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is longer than ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _unauthorized() -> JSONResponse:
    response = _error(401, "missing or unknown write key: send it as the HTTP Basic user (Segment's writeKey, "
                           "empty password), in the X-Zt-Write-Key header, or as writeKey in the body; keys are "
                           "configured in collector.write_keys")
    response.headers["WWW-Authenticate"] = 'Basic realm="zhongtai collector"'
    return response


def _message_id(msg: Any) -> Any:
    return msg.get("messageId") if isinstance(msg, dict) else None


async def _collect(c: Collector, request: Request, kind: str | None) -> Response:
    cfg = c.settings.collector
    received_ms = int(time.time() * 1000)
    if not c.origin_allowed(request):
        return _error(403, f"origin {request.headers.get('origin')!r} may not send events: add it to "
                           "collector.cors_origins")
    if request.headers.get("content-encoding", "identity").lower() != "identity":
        return _error(415, "compressed bodies are not accepted: send the JSON uncompressed")
    body = await _read_body(request, cfg.max_body_bytes)
    if body is None:
        return _error(413, f"the body is larger than collector.max_body_bytes ({cfg.max_body_bytes} bytes): "
                           "send fewer events per request")
    try:
        doc = parse_json(body)
    except ValueError as e:
        return _error(400, f"the body is not JSON ({e}): send one JSON object", reason="malformed_json")
    if not isinstance(doc, dict):
        return _error(400, "the body must be a JSON object", reason="malformed_json")
    key = _header_key(request) or (doc.get("writeKey") if isinstance(doc.get("writeKey"), str) else None)
    source = c.source_of(key)
    if source is None and c.api_keys is not None:
        try:
            source = await asyncio.to_thread(c.api_key_source, key)
        except RedisError as e:
            no_redis = _error(503, f"Redis cannot be reached to check the API key ({type(e).__name__}: {e}); "
                                   "is the stack up?")
            no_redis.headers["Retry-After"] = str(cfg.retry_after_s)
            return no_redis
    if source is None:
        return _unauthorized()
    if kind is None:
        messages = doc.get("batch")
        if not isinstance(messages, list):
            return _error(400, 'a batch is {"batch": [message, ...]}', reason="wrong_type:batch")
        if len(messages) > cfg.max_batch_events:
            return _error(413, f"the batch holds {len(messages)} events, more than collector.max_batch_events "
                               f"({cfg.max_batch_events}): split it")
    else:
        messages = [doc]

    records: list[tuple[bytes, bytes]] = []
    rejected: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        mapped = to_envelope(msg, kind, source, received_ms, doc.get("sentAt"))
        if isinstance(mapped, Mapped):
            decoded = c.validate(mapped.value, received_ms)
            if isinstance(decoded, str):
                mapped = Rejection(decoded, explain(decoded))
            else:
                records.append(((mapped.anonymous or decoded.event.person).encode("utf-8"), mapped.value))
        if isinstance(mapped, Rejection):
            rejected.append({"index": i, "messageId": _message_id(msg), "reason": mapped.reason,
                             "message": mapped.message})
            c.metrics.rejected.labels(source, mapped.reason).inc()

    if records:
        unavailable = await _deliver(c, records, received_ms)
        if unavailable is not None:
            return unavailable
        c.metrics.accepted.labels(source).inc(len(records))
    if rejected:
        logger.info("collector: %s rejected %d of %d event(s): %s", source, len(rejected), len(messages),
                    ", ".join(sorted({r["reason"] for r in rejected})))
        return _error(400, f"{len(rejected)} of {len(messages)} event(s) rejected (the other {len(records)} were "
                           "accepted): see rejected[]; sending them again will not help until they are fixed",
                      accepted=len(records), rejected=rejected)
    return JSONResponse({"accepted": len(records)})


async def _deliver(c: Collector, records: list[tuple[bytes, bytes]], received_ms: int) -> Response | None:
    """None once Kafka has acknowledged every record, else the 503 to answer."""
    cfg = c.settings.collector
    assert c.producer is not None, "the collector's producer starts with the app"
    try:
        done = c.producer.send(records, received_ms)
        await asyncio.wait_for(asyncio.wrap_future(done), cfg.delivery_timeout_ms / 1000 + 1.0)
    except ProducerUnavailable as e:
        cause, detail = e.cause, str(e)
    except TimeoutError:
        cause, detail = "timeout", f"Kafka did not acknowledge within {cfg.delivery_timeout_ms} ms"
    else:
        return None
    c.metrics.unavailable.labels(cause).inc()
    response = _error(503, f"{detail}; nothing of this request is confirmed: send it again after Retry-After "
                           "seconds (with the same messageIds: events already written are counted once)",
                      cause=cause)
    response.headers["Retry-After"] = str(cfg.retry_after_s)
    return response


def _observed(c: Collector, route: str, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        t0 = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status_code
            return response
        finally:
            c.metrics.requests.labels(route, str(status)).inc()
            c.metrics.latency.labels(route).observe(time.perf_counter() - t0)
    return endpoint


def create_app(settings: Settings, *, topic: str | None = None, metrics_dir: str | None = None) -> Starlette:
    """The collector over ``settings`` (``collector.*``, ``kafka.bootstrap``, ``job``, ``pii``, ``identity``);
    ``topic`` replaces ``collector.topic``. The producer starts and stops with the app. ``metrics_dir``: the
    ``PROMETHEUS_MULTIPROC_DIR`` of ``zhongtai collect --workers N`` (``/metrics`` sums every process's)."""
    c = Collector(settings, topic)

    def post(kind: str | None) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            return await _collect(c, request, kind)
        return handler

    async def sdk(request: Request) -> Response:
        return FileResponse(SDK_FILE, media_type="application/javascript; charset=utf-8",
                            headers={"Cache-Control": "public, max-age=300"})

    async def healthz(request: Request) -> Response:
        p = c.producer
        down = p is None or p.kafka_down
        return JSONResponse({"kafka": "down" if down else "up", "producer_queue": p.queued() if p else 0,
                             "process": os.getpid()}, status_code=503 if down else 200)

    async def metrics(request: Request) -> Response:
        registry = c.metrics.registry
        if metrics_dir:  # several worker processes: the sum of their files
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=metrics_dir)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        c.producer = EventProducer(settings, c.topic)
        try:
            yield
        finally:
            await asyncio.to_thread(c.producer.close)

    routes = [Route(f"/v1/{kind}", _observed(c, f"/v1/{kind}", post(kind)), methods=["POST"])
              for kind in ("track", "identify", "page")]
    routes += [
        Route("/v1/batch", _observed(c, "/v1/batch", post(None)), methods=["POST"]),
        Route("/sdk/zt.js", sdk, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    origins = list(settings.collector.cors_origins)
    middleware = [Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["POST"], max_age=600,
                             allow_headers=["Authorization", "Content-Type", "X-Zt-Write-Key"])]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.collector = c
    return app
