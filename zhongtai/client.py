"""A Python client of ``zhongtai collect`` for server-side sources (CRM, stores, back ends); docs/collector.md.

::

    from zhongtai.client import Client

    with Client("https://collect.example.com", write_key="CRM_WRITE_KEY") as zt:
        zt.identify("u-123", {"tier": "gold", "city": "Hangzhou"})
        zt.track("purchase", {"order_id": "o-9", "price": "129.00", "qty": 1}, user_id="u-123")
    # leaving the block flushes; a rejected event raises Rejected, an outage that outlasts the retries raises
    # Unavailable with the events still queued

Calls queue events (each gets a ``messageId`` and a ``timestamp`` here); :meth:`Client.flush` sends them to
``POST /v1/batch`` in batches of ``flush_at``, and a call that fills a batch flushes it (raising what
:meth:`Client.flush` raises). Network errors, 429 and
5xx are retried with exponential backoff and jitter (``Retry-After`` honoured) with the same ``messageId``s,
so the job counts a retried event once. A 400 is final for the events it rejects (the rest of their batch is
accepted): :class:`Rejected` lists them. Nothing is dropped silently: an event leaves the queue only once the
collector has answered for it. Not thread-safe: one client per thread.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx

__all__ = ["Client", "CollectorError", "Rejected", "Refused", "Unavailable"]


class CollectorError(RuntimeError):
    """The collector did not take every event; the message says what to do."""


class Rejected(CollectorError):
    """The collector rejected events (HTTP 400): ``rejected`` holds ``{messageId, reason, message, event}`` per
    event; every other event of the flush was accepted. Sending them again will not help until they are fixed."""

    def __init__(self, rejected: list[dict[str, Any]], accepted: int) -> None:
        reasons = ", ".join(sorted({r["reason"] for r in rejected}))
        super().__init__(f"the collector rejected {len(rejected)} event(s) ({reasons}); {accepted} accepted. "
                         f"First: {rejected[0]['messageId']}: {rejected[0]['message']}")
        self.rejected, self.accepted = rejected, accepted


class Refused(CollectorError):
    """The collector refused the request (401 wrong write key, 403, 413 for one event, 415): a configuration
    or size problem that retrying cannot fix. The events stay queued."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(f"the collector answered {status}: {error}")
        self.status = status


class Unavailable(CollectorError):
    """The collector or its Kafka stayed unavailable through every retry; the events stay queued: call
    :meth:`Client.flush` again later."""


def _iso(ts: datetime | None) -> str:
    dt = (ts or datetime.now(UTC)).astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class Client:
    """Batching, retrying client of one collector with one write key."""

    def __init__(self, host: str, write_key: str, *, flush_at: int = 100, max_retries: int = 6,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 30.0, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not write_key:
            raise ValueError("zhongtai.client.Client needs the write key of its source (collector.write_keys)")
        self.flush_at, self.max_retries = max(1, flush_at), max_retries
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self._sleep = sleep
        self._http = httpx.Client(base_url=host.rstrip("/"), auth=httpx.BasicAuth(write_key, ""), timeout=timeout_s,
                                  transport=transport, headers={"User-Agent": "zhongtai-client/1"})
        self.queue: list[dict[str, Any]] = []
        self.accepted = 0

    # ---- calls -----------------------------------------------------------------------------------

    def track(self, event: str, properties: dict[str, Any] | None = None, *, user_id: str | None = None,
              anonymous_id: str | None = None, ids: dict[str, str] | None = None, timestamp: datetime | None = None,
              context: dict[str, Any] | None = None, message_id: str | None = None) -> str:
        """Queue a track call; returns its ``messageId``. Needs ``user_id``, ``anonymous_id`` or ``ids``."""
        return self._enqueue({"type": "track", "event": event, "properties": properties or {}}, user_id,
                             anonymous_id, ids, timestamp, context, message_id)

    def identify(self, user_id: str | None, traits: dict[str, Any] | None = None, *, anonymous_id: str | None = None,
                 ids: dict[str, str] | None = None, timestamp: datetime | None = None,
                 context: dict[str, Any] | None = None, message_id: str | None = None) -> str:
        """Queue an identify call (``traits`` become profile attributes); returns its ``messageId``."""
        return self._enqueue({"type": "identify", "traits": traits or {}}, user_id, anonymous_id, ids, timestamp,
                             context, message_id)

    def _enqueue(self, msg: dict[str, Any], user_id: str | None, anonymous_id: str | None,
                 ids: dict[str, str] | None, timestamp: datetime | None, context: dict[str, Any] | None,
                 message_id: str | None) -> str:
        if not (user_id or anonymous_id or ids):
            raise ValueError(f"{msg['type']}: give user_id, anonymous_id or ids (phone, email, openid, ...): "
                             "an event without an identifier belongs to nobody")
        msg["messageId"] = message_id or str(uuid.uuid4())
        msg["timestamp"] = _iso(timestamp)
        for key, value in (("userId", user_id), ("anonymousId", anonymous_id), ("ids", ids), ("context", context)):
            if value:
                msg[key] = value
        self.queue.append(msg)
        if len(self.queue) >= self.flush_at:
            self.flush()
        return str(msg["messageId"])

    # ---- sending ---------------------------------------------------------------------------------

    def flush(self) -> int:
        """Send every queued event; returns how many the collector accepted in this flush. Raises
        :class:`Rejected` (after sending everything else), :class:`Refused` or :class:`Unavailable`."""
        accepted, rejected = 0, []
        size = self.flush_at
        while self.queue:
            batch = self.queue[:size]
            status, answer = self._post(batch)
            if status == 413 and len(batch) > 1:
                size = max(1, len(batch) // 2)
                continue
            if status not in (200, 400):
                raise Refused(status, str(answer.get("error", answer)))
            del self.queue[:len(batch)]
            accepted += int(answer.get("accepted", 0))
            for r in answer.get("rejected", []) if status == 400 else []:
                rejected.append({**r, "event": batch[r["index"]] if isinstance(r.get("index"), int) else None})
        self.accepted += accepted
        if rejected:
            raise Rejected(rejected, accepted)
        return accepted

    def _post(self, batch: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """One batch, retried through network errors, 429 and 5xx; ``(status, answer)`` of a final answer."""
        error, retry_after = "", ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep(self._delay(attempt, retry_after))
            try:
                r = self._http.post("/v1/batch", json={"batch": batch, "sentAt": _iso(None)})
            except httpx.HTTPError as e:
                error, retry_after = f"{type(e).__name__}: {e}", ""
                continue
            if r.status_code == 429 or r.status_code >= 500:
                error = f"HTTP {r.status_code}: {_answer(r).get('error', '')}"
                retry_after = r.headers.get("Retry-After", "")
                continue
            return r.status_code, _answer(r)
        raise Unavailable(f"the collector did not take {len(batch)} event(s) in {self.max_retries + 1} attempts "
                          f"({error}); they are still queued ({len(self.queue)}): flush() again later")

    def _delay(self, attempt: int, retry_after: str) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        delay = delay / 2 + random.random() * delay / 2
        if retry_after.isdigit():
            delay = max(delay, float(retry_after))
        return delay

    def close(self) -> None:
        """Flush, then close the connection (also when the flush raises)."""
        try:
            self.flush()
        finally:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self._http.close()


def _answer(r: httpx.Response) -> dict[str, Any]:
    try:
        out = r.json()
    except ValueError:
        return {"error": r.text[:500]}
    return out if isinstance(out, dict) else {"error": str(out)[:500]}
