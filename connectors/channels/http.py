"""HTTP delivery: signed webhooks and the SMS, push and coupon provider adapters (``httpx``).

Every request is a JSON POST carrying

* ``Idempotency-Key: <action_id>``: a provider that honours it (most SMS/push gateways and payment
  style APIs do) turns a re-delivery after a crash into a no-op;
* ``X-Zhongtai-Timestamp: <epoch s>`` and, when a signing secret is set,
  ``X-Zhongtai-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` (``verify_signature``
  is the receiver's side);
* ``Authorization: Bearer <token>`` when a token is set.

Classification: 2xx delivered (provider id from the JSON ``id``/``message_id`` field or the
``X-Message-Id`` header, else the action id); 409 (the provider already has this idempotency key)
delivered; 408, 425, 429 and 5xx transient (``Retry-After`` in seconds honoured); other 4xx permanent;
timeouts and connection errors transient.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import orjson

from connectors.channels.base import Contact, DeliveryResult, render
from operators.messages import Action

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import HttpProviderSettings

SIGNATURE_HEADER = "X-Zhongtai-Signature"
TIMESTAMP_HEADER = "X-Zhongtai-Timestamp"
_TRANSIENT = {408, 425, 429}


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``v1=<hex>``: HMAC-SHA256 over ``b"<timestamp>." + body``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify_signature(secret: bytes, timestamp: str, body: bytes, header: str, now_s: float,
                     tolerance_s: float = 300.0) -> bool:
    """Receiver side: the signature matches and the timestamp is within ``tolerance_s`` of now."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now_s - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), header or "")


def _retry_after(r: httpx.Response) -> float | None:
    v = r.headers.get("Retry-After")
    try:
        return max(0.0, float(v)) if v is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _provider_id(r: httpx.Response, action_id: str) -> str:
    try:
        d = r.json()
    except ValueError:
        d = None
    if isinstance(d, dict):
        for k in ("id", "message_id", "provider_id"):
            if d.get(k):
                return str(d[k])
    return r.headers.get("X-Message-Id") or action_id


class HttpAdapter:
    """One channel delivered by JSON POST. Subclasses say where to and what body (``target``/``payload``)."""

    channel = "webhook"

    def __init__(self, cfg: HttpProviderSettings, templates: Mapping[str, Mapping[str, str]],
                 clock: Callable[[], float] = time.time, transport: httpx.BaseTransport | None = None) -> None:
        self.cfg = cfg
        self.templates = templates
        self.clock = clock
        self.secret = cfg.signing_secret.get_secret_value().encode() if cfg.signing_secret else None
        headers = {"Content-Type": "application/json", "User-Agent": "zhongtai-worker"}
        if cfg.token:
            headers["Authorization"] = f"Bearer {cfg.token.get_secret_value()}"
        self.client = httpx.Client(timeout=cfg.timeout_s, headers=headers, transport=transport)

    # ---- what a subclass decides ----------------------------------------------------------------
    def target(self, action: Action, contact: Contact) -> str | None:
        """The URL to POST to, None when the contact has no address for this channel."""
        return self.cfg.url or None

    def payload(self, action: Action, contact: Contact) -> dict[str, Any]:
        subject, body = render(self.templates, action)
        return {"action_id": action.action_id, "person_id": action.person_id, "template": action.template,
                "subject": subject, "text": body, "params": dict(action.params), "campaign": action.campaign}

    # ---- the contract ---------------------------------------------------------------------------
    def destination(self, action: Action, contact: Contact) -> str:
        url = self.target(action, contact) or ""
        parts = urlsplit(url)
        return f"{self.channel}:{parts.scheme}://{parts.netloc}"

    def request(self, action: Action, contact: Contact) -> tuple[str, bytes, dict[str, str]] | None:
        """``(url, body, headers)`` of the delivery, None when there is nowhere to send it."""
        url = self.target(action, contact)
        if not url:
            return None
        body = orjson.dumps(self.payload(action, contact), option=orjson.OPT_SORT_KEYS)
        ts = int(self.clock())
        headers = {"Idempotency-Key": action.action_id, TIMESTAMP_HEADER: str(ts)}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, ts, body)
        return url, body, headers

    def deliver(self, action: Action, contact: Contact) -> DeliveryResult:
        req = self.request(action, contact)
        if req is None:
            return DeliveryResult.suppressed("no_address")
        url, body, headers = req
        try:
            r = self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            return DeliveryResult.transient(f"POST {url}: {type(e).__name__}: {e}")
        code = r.status_code
        if 200 <= code < 300 or code == 409:
            return DeliveryResult.delivered(_provider_id(r, action.action_id))
        text = r.text[:200].replace("\n", " ")
        reason = f"POST {url}: HTTP {code} {text}".strip()
        if code in _TRANSIENT or code >= 500:
            return DeliveryResult.transient(reason, _retry_after(r))
        return DeliveryResult.permanent(reason)

    def close(self) -> None:
        self.client.close()


class WebhookAdapter(HttpAdapter):
    """``webhook``: the action as JSON to the contact's ``webhook_url`` (else ``worker.webhook.url``)."""

    channel = "webhook"

    def target(self, action: Action, contact: Contact) -> str | None:
        return contact.webhook_url or self.cfg.url or None

    def payload(self, action: Action, contact: Contact) -> dict[str, Any]:
        return action.to_json()


class SmsAdapter(HttpAdapter):
    """``sms``: ``{"to": phone, "text": ...}`` to the SMS gateway at ``worker.sms.url``."""

    channel = "sms"

    def target(self, action: Action, contact: Contact) -> str | None:
        return self.cfg.url if contact.phone else None

    def payload(self, action: Action, contact: Contact) -> dict[str, Any]:
        return {**super().payload(action, contact), "to": contact.phone}


class PushAdapter(HttpAdapter):
    """``push``: ``{"token": device token, "title", "text"}`` to the push service at ``worker.push.url``."""

    channel = "push"

    def target(self, action: Action, contact: Contact) -> str | None:
        return self.cfg.url if contact.push_token else None

    def payload(self, action: Action, contact: Contact) -> dict[str, Any]:
        p = super().payload(action, contact)
        return {**p, "token": contact.push_token, "title": p["subject"]}


class CouponAdapter(HttpAdapter):
    """``coupon``: asks the coupon service at ``worker.coupon.url`` to issue ``params`` to the person."""

    channel = "coupon"

    def payload(self, action: Action, contact: Contact) -> dict[str, Any]:
        return {"action_id": action.action_id, "person_id": action.person_id, "campaign": action.campaign,
                "template": action.template, "params": dict(action.params)}


def _check_url(channel: str, url: str) -> None:
    if url and urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"worker.{channel}.url {url!r} must be an http(s) URL")


def build_http_adapter(channel: str, cfg: HttpProviderSettings, templates: Mapping[str, Mapping[str, str]],
                       clock: Callable[[], float] = time.time) -> HttpAdapter:
    """The adapter of an HTTP channel (``webhook``, ``sms``, ``push``, ``coupon``)."""
    _check_url(channel, cfg.url)
    cls = {"webhook": WebhookAdapter, "sms": SmsAdapter, "push": PushAdapter, "coupon": CouponAdapter}[channel]
    if channel != "webhook" and not cfg.url:
        raise ValueError(f"worker.{channel}.url is empty: set the {channel} provider's endpoint")
    return cls(cfg, templates, clock)
