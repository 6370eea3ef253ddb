"""The API's gate: request size, who is calling (API key or the legacy token), the route's scope, the key's
rate limit, and one structured access-log line per request (docs/api.md, "Keys, scopes and limits").

In order, for every HTTP request:

1. a body above ``api.max_body_bytes`` gets 413 (by ``Content-Length``, or while it streams in);
2. with auth on (a ``token`` given, or ``api.require_keys``), a route that needs a scope
   (:func:`~zhongtai.services.api.keys.required_scope`) needs ``Authorization: Bearer <key>``: no or a wrong
   token, an unknown or revoked key → 401; a key without the scope → 403 naming it. The legacy token is an
   ``admin`` key with id ``api.token``;
3. the key's token bucket in Redis (``connectors.api_keys``, one atomic Lua step) gives a token, or the
   request gets 429 with ``Retry-After`` (whole seconds, rounded up);
4. the handler runs with ``request.state.key_id`` (None when auth is off), which the audit log records.

The access log is one JSON object per request on the ``zhongtai.api.access`` logger: ``key`` (id, never the
secret), ``method``, ``route`` (the template, never the path: identifiers stay out of logs), ``status``,
``latency_ms``.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from redis.exceptions import RedisError
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import keys

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import ApiSettings
    from connectors.api_keys import RedisApiKeys

access_logger = logging.getLogger("zhongtai.api.access")

_WRONG_TOKEN = "missing or wrong bearer token: send `Authorization: Bearer <api.token>`"


class _TooLarge(Exception):
    pass


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


class Gateway:
    """ASGI middleware; see the module's doc. ``store`` None: auth off (sizes and the access log still apply).
    ``clock`` gives epoch milliseconds (the buckets' time; tests pass their own)."""

    def __init__(self, app: ASGIApp, cfg: ApiSettings, routes: list[BaseRoute], route_of: Callable[..., str],
                 token: str | None, store: RedisApiKeys | None, clock: Callable[[], float] = time.time) -> None:
        self.app, self.cfg, self.routes, self.route_of = app, cfg, routes, route_of
        self.token, self.store, self.clock = (token.encode() if token else None), store, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.route_of(self.routes, scope)
        t0, status = time.perf_counter(), [500]
        key_id: list[str | None] = [None]

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._gate(scope, receive, observed, route, key_id)
        finally:
            if self.cfg.access_log:
                access_logger.info(json.dumps({
                    "key": key_id[0], "method": scope["method"], "route": route, "status": status[0],
                    "latency_ms": round((time.perf_counter() - t0) * 1000, 3)}, separators=(",", ":")))

    async def _gate(self, scope: Scope, receive: Receive, send: Send, route: str, key_id: list[str | None]) -> None:
        limit = self.cfg.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._too_large(scope, receive, send)
            return
        gated = self.store is not None or self.token is not None
        if gated and keys.required_scope(scope["method"], route) is not None:
            # one worker-thread hop for the key's look-up and its bucket (both synchronous Redis calls)
            refused = await anyio.to_thread.run_sync(self._refusal, scope, route, key_id)
            if refused is not None:
                await refused(scope, receive, send)
                return
        scope.setdefault("state", {})["key_id"] = key_id[0]
        seen, started = [0], [False]

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            started[0] = started[0] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if started[0]:
                raise
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _json(413, {"error": f"request body above api.max_body_bytes ({self.cfg.max_body_bytes} bytes); "
                                   "send less per request"})(scope, receive, send)

    def _refusal(self, scope: Scope, route: str, key_id: list[str | None]) -> JSONResponse | None:
        """The response refusing the request (401 / 403 / 429 / 503), None to let it through."""
        needed = keys.required_scope(scope["method"], route)
        if needed is None:
            return None
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, value = given.partition(b" ")
        value = value.strip()
        if scheme.lower() != b"bearer":
            return self._unauthorized(_WRONG_TOKEN)
        per_s, burst = self.cfg.rate.per_s, self.cfg.rate.burst
        if self.token is not None and hmac.compare_digest(value, self.token):
            key_id[0], scopes = keys.TOKEN_KEY_ID, frozenset({"admin"})
        else:
            parsed = keys.parse(value.decode("ascii", errors="replace"))
            if parsed is None or self.store is None:
                return self._unauthorized(_WRONG_TOKEN)
            try:
                rec = self.store.get(parsed[0])
            except RedisError as e:
                return _unavailable(e)
            if rec is None or rec.revoked_ms is not None or not keys.secret_matches(parsed[1], rec.digest):
                return self._unauthorized(f"unknown or revoked API key {parsed[0]}: ask an admin for a key "
                                          "(`zhongtai keys create`)")
            key_id[0], scopes = rec.key_id, rec.scopes
            per_s, burst = rec.per_s or per_s, rec.burst or burst
        who = key_id[0] or keys.TOKEN_KEY_ID
        if not keys.allows(scopes, needed):
            return _json(403, {"error": f"API key {key_id[0]} lacks scope {needed} for {scope['method']} {route}; "
                                        "create a key with it (`zhongtai keys create --scope "
                                        f"{needed}`)", "scope": needed})
        if self.store is None:
            return None
        try:
            wait = self.store.take(who, int(self.clock() * 1000), per_s, burst)
        except RedisError as e:
            return _unavailable(e)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            return _json(429, {"error": f"API key {key_id[0]} is over its rate limit ({per_s:g}/s, burst {burst}); "
                                        f"retry in {retry} s", "retry_after_s": retry},
                         headers={"Retry-After": str(retry)})
        return None

    @staticmethod
    def _unauthorized(message: str) -> JSONResponse:
        return _json(401, {"error": message}, headers={"WWW-Authenticate": 'Bearer realm="zhongtai"'})


def _unavailable(e: Exception) -> JSONResponse:
    return _json(503, {"error": f"Redis cannot be reached to check the API key ({type(e).__name__}: {e}); "
                                "is the stack up (`zhongtai stack status`)?"})
