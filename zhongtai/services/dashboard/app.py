"""The live dashboard: a Starlette (ASGI) app over the job's Redis keys, pushed to the page with SSE.

Routes: ``/`` the page (zhongtai/services/dashboard/page.py: plain HTML + JS, charts drawn as inline SVG,
no CDN), ``/events`` Server-Sent Events (``event: summary`` every ``refresh_s`` with the same JSON
as ``/api/summary``; ``event: failure`` while Redis cannot be read), ``/api/summary``,
``/api/funnel?campaign=&channel=`` (one scope's per-minute series; both empty = ``all``),
``/api/experiments``, ``/healthz`` (Redis ping) and ``/metrics`` (Prometheus text).

One :class:`Dashboard` per app computes a snapshot at most once per ``refresh_s`` whatever the
number of open pages: Redis load does not grow with viewers. Redis and Kafka clients are
synchronous, so snapshots are computed in a worker thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.kafka_security import client_config

from .experiments import ReportSettings
from .funnel import ALL, join_scope, minute_label
from .health import RateWindow, TotalsSample
from .kafka_lag import GroupLag, consumer_lag
from .metrics import DashboardMetrics
from .page import HTML
from .reader import DashboardReader

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DashboardOptions:
    """How one dashboard reads. ``prefix``/``group`` default to the configured Redis prefix and
    Kafka consumer group; ``refresh_s`` is both the SSE push interval and the longest a snapshot
    is reused; ``lag=False`` skips Kafka entirely."""

    prefix: str | None = None
    group: str | None = None
    refresh_s: float = 1.0
    window_minutes: int = 30
    discover_every_s: float = 10.0
    rate_window_s: float = 10.0
    lag: bool = True
    lag_every_s: float = 5.0


class Dashboard:
    """Snapshots of one prefix: totals + health rates + funnels + tags + experiments + lag.

    ``clock`` (monotonic seconds) paces caches and rates; ``wall_ms`` gives "now" for the funnel
    window. ``lag_reader`` replaces the Kafka read (tests).
    """

    def __init__(
        self,
        settings: Settings,
        opts: DashboardOptions,
        *,
        lag_reader: Callable[[], GroupLag] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        from connectors.redis_store import RedisStore

        self.opts = opts
        self.group = opts.group or settings.kafka.consumer_group
        self.store = RedisStore(settings.redis, prefix=opts.prefix)
        self.metrics = DashboardMetrics(totals=self._last_totals)
        self.reader = DashboardReader(
            self.store, window_minutes=opts.window_minutes, discover_every_s=opts.discover_every_s,
            observe=self.metrics.observe_redis, clock=clock, report=ReportSettings(
                settings.experiments.alpha, settings.experiments.correction, settings.experiments.target_n),
        )  # fmt: skip
        self.rates = RateWindow(opts.rate_window_s)
        self.clock, self.wall_ms = clock, wall_ms
        bootstrap, client = settings.kafka.bootstrap, client_config(settings.kafka)
        self._lag_reader = lag_reader or (lambda: consumer_lag(bootstrap, self.group, timeout_s=2.0, client=client))
        self._lock = threading.Lock()
        self._snap: tuple[float, dict[str, Any]] | None = None
        self._lag: tuple[float, GroupLag] | None = None

    @property
    def prefix(self) -> str:
        return self.store.prefix

    def _last_totals(self) -> dict[str, int]:
        snap = self._snap
        return snap[1]["totals"] if snap else {}

    def lag(self) -> dict[str, Any]:
        """The group's lag, read from Kafka at most every ``lag_every_s``."""
        if not self.opts.lag:
            return {"group": self.group, "total": None, "by_topic": {}, "partitions": 0, "error": "disabled"}
        now = self.clock()
        if self._lag is None or now - self._lag[0] >= self.opts.lag_every_s:
            self._lag = (now, self._lag_reader())
            if self._lag[1].error is None:
                self.metrics.lag.labels(self.group).set(self._lag[1].total)
        return self._lag[1].to_json()

    def summary(self, max_age_s: float = 0.0) -> dict[str, Any]:
        """The whole page's data; reused when younger than ``max_age_s``. Raises RedisError."""
        with self._lock:
            now = self.clock()
            if self._snap is not None and now - self._snap[0] < max_age_s:
                return self._snap[1]
            now_ms = self.wall_ms()
            totals = self.reader.totals()
            health = self.rates.add(TotalsSample(now, totals)).to_json()
            end, funnels = self.reader.funnels(now_ms)
            snap = {
                "prefix": self.prefix,
                "now_ms": now_ms,
                "window": {"minutes": self.reader.window_minutes, "end": minute_label(end)},
                "totals": totals,
                "health": {**health, "lag": self.lag()},
                "funnels": [f.to_json() for f in funnels],
                "tags": self.reader.tags(),
                "experiments": self.reader.experiments(),
            }
            self._snap = (now, snap)
            return snap

    def funnel(self, campaign: str, channel: str) -> dict[str, Any] | None:
        """One scope's funnel with series, or None when the job never wrote that scope."""
        scope = join_scope(campaign, channel)
        if scope != ALL and scope not in self.reader.scopes():
            return None
        end, (f,) = self.reader.funnels(self.wall_ms(), scopes=[scope])
        return {"window": {"minutes": self.reader.window_minutes, "end": minute_label(end)}, **f.to_json()}

    def close(self) -> None:
        self.store.close()


class _CountRequests:
    """ASGI middleware: ``zhongtai_dashboard_requests_total{route, method, status}``."""

    def __init__(self, app: ASGIApp, metrics: DashboardMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.metrics.route_of(scope["path"])

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route, scope["method"], str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


def _failure(e: Exception) -> str:
    return f"Redis cannot be read ({type(e).__name__}: {e}); is the stack up (`zhongtai stack status`)?"


def create_app(
    settings: Settings,
    opts: DashboardOptions | None = None,
    *,
    lag_reader: Callable[[], GroupLag] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_ms: Callable[[], int] | None = None,
) -> Starlette:
    """The ASGI app. ``app.state.dashboard`` is its :class:`Dashboard` (closed on shutdown)."""
    opts = opts or DashboardOptions()
    kw: dict[str, Any] = {"lag_reader": lag_reader, "clock": clock}
    if wall_ms is not None:
        kw["wall_ms"] = wall_ms
    dash = Dashboard(settings, opts, **kw)

    async def page(request: Request) -> Response:
        return HTMLResponse(HTML)

    async def api_summary(request: Request) -> Response:
        try:
            return JSONResponse(await anyio.to_thread.run_sync(dash.summary, 0.0))
        except RedisError as e:
            return JSONResponse({"error": _failure(e)}, status_code=503)

    async def api_funnel(request: Request) -> Response:
        campaign = request.query_params.get("campaign", "")
        channel = request.query_params.get("channel", "")
        try:
            out = await anyio.to_thread.run_sync(dash.funnel, campaign, channel)
        except RedisError as e:
            return JSONResponse({"error": _failure(e)}, status_code=503)
        if out is None:
            scope = join_scope(campaign, channel)
            return JSONResponse(
                {"error": f"no counters for campaign {campaign!r} x channel {channel!r} (scope {scope!r}) "
                          "under this prefix; /api/summary lists the scopes"},
                status_code=404,
            )  # fmt: skip
        return JSONResponse(out)

    async def api_experiments(request: Request) -> Response:
        try:
            return JSONResponse({"experiments": await anyio.to_thread.run_sync(dash.reader.experiments)})
        except RedisError as e:
            return JSONResponse({"error": _failure(e)}, status_code=503)

    async def api_recs_pairs(request: Request) -> Response:
        from .recs import top_pairs

        try:
            return JSONResponse(await anyio.to_thread.run_sync(top_pairs, dash.store))
        except RedisError as e:
            return JSONResponse({"error": _failure(e)}, status_code=503)

    async def api_prices(request: Request) -> Response:
        from .prices import latest_prices

        try:
            return JSONResponse(await anyio.to_thread.run_sync(latest_prices, dash.store))
        except RedisError as e:
            return JSONResponse({"error": _failure(e)}, status_code=503)

    async def healthz(request: Request) -> Response:
        try:
            await anyio.to_thread.run_sync(dash.store.client.ping)
        except RedisError as e:
            return JSONResponse({"ok": False, "error": _failure(e)}, status_code=503)
        return JSONResponse({"ok": True, "prefix": dash.prefix})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(dash.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def events(request: Request) -> Response:
        async def stream():
            dash.metrics.sse_clients.inc()
            try:
                yield f"retry: {int(opts.refresh_s * 1000) + 1000}\n\n"
                while not await request.is_disconnected():
                    try:
                        snap = await anyio.to_thread.run_sync(dash.summary, opts.refresh_s)
                        yield f"event: summary\ndata: {json.dumps(snap, separators=(',', ':'))}\n\n"
                    except RedisError as e:
                        yield f"event: failure\ndata: {json.dumps({'error': _failure(e)})}\n\n"
                    await anyio.sleep(opts.refresh_s)
            finally:
                dash.metrics.sse_clients.dec()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    routes = [
        Route("/", page),
        Route("/events", events),
        Route("/api/summary", api_summary),
        Route("/api/funnel", api_funnel),
        Route("/api/experiments", api_experiments),
        Route("/api/recs/pairs", api_recs_pairs),
        Route("/api/prices", api_prices),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
    ]
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            dash.close()

    app = Starlette(routes=routes, middleware=[Middleware(_CountRequests, metrics=dash.metrics)], lifespan=lifespan)
    app.state.dashboard = dash
    return app
