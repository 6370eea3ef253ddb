"""After an order, look its shipment up and feed the answer back as an event (entry point
``zhongtai.enrichers: logistics``; ``zhongtai enrich logistics`` runs it, docs/plugins.md).

For every event whose type is in ``event_types`` (default ``purchase``) and that carries ``props.order_id``, it
asks the logistics service ``GET {url}/orders/{order_id}`` (``Authorization: Bearer <token>`` when set) and
turns a 200 answer ``{"carrier", "tracking_no", "status", "eta"}`` into one event of the same person::

    {"event_id": "<order event id>:logistics", "event_type": "logistics_update", "ts": <now ms>,
     "ids": <the order event's ids>, "source": "enricher",
     "props": {"order_id", "carrier", "tracking_no", "shipping_status", "eta"}}

The event id is derived from the order event's, so a replayed order yields the same event and the job's dedup
keeps one. 404 (the order is not known to the carrier yet) yields nothing; 5xx, 429 and timeouts raise
:class:`config.plugins.TryLater` (the runner retries, then gives the order up to its dead-letter topic);
other answers raise ``ValueError`` (dead letter at once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from config.plugins import TryLater

_FIELDS = {"carrier": "carrier", "tracking_no": "tracking_no", "status": "shipping_status", "eta": "eta"}


class LogisticsConfig(BaseModel):
    """``plugins.logistics``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)
    token: SecretStr | None = None
    timeout_s: float = Field(5.0, gt=0)
    event_types: tuple[str, ...] = ("purchase",)
    #: The ``event_type`` of the events it feeds back.
    emits: str = "logistics_update"


class LogisticsEnricher:
    """One per ``zhongtai enrich logistics`` process."""

    config_model = LogisticsConfig

    def __init__(self, config: LogisticsConfig, transport: httpx.BaseTransport | None = None) -> None:
        if urlsplit(config.url).scheme not in ("http", "https"):
            raise ValueError(f"plugins.logistics.url {config.url!r} must be an http(s) URL")
        self.cfg = config
        self.event_types = frozenset(config.event_types)
        headers = {"User-Agent": "zhongtai-logistics"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
        self.client = httpx.Client(timeout=config.timeout_s, headers=headers, transport=transport)

    def enrich(self, event: Mapping[str, Any], now_ms: int) -> list[dict[str, Any]]:
        """The events learnt from ``event`` (an envelope of one of ``event_types``)."""
        order = (event.get("props") or {}).get("order_id")
        if not order:
            return []
        url = f"{self.cfg.url.rstrip('/')}/orders/{quote(str(order), safe='')}"
        try:
            r = self.client.get(url)
        except httpx.HTTPError as e:
            raise TryLater(f"GET {url}: {type(e).__name__}: {e}") from e
        if r.status_code == 404:
            return []
        if r.status_code >= 500 or r.status_code == 429:
            raise TryLater(f"GET {url}: HTTP {r.status_code}")
        if r.status_code != 200:
            raise ValueError(f"GET {url}: HTTP {r.status_code} {r.text[:200]}")
        found = r.json()
        if not isinstance(found, dict):
            raise ValueError(f"GET {url}: the answer is not a JSON object")
        props = {"order_id": str(order), **{out: found[k] for k, out in _FIELDS.items() if found.get(k) is not None}}
        eid = f"{event['event_id']}:logistics"
        if len(eid) > 128:  # the envelope's limit: a digest of the order event's id, as deterministic
            eid = "logistics:" + hashlib.sha256(str(event["event_id"]).encode()).hexdigest()
        return [{"event_id": eid, "event_type": self.cfg.emits, "ts": now_ms,
                 "ids": dict(event.get("ids") or {}), "source": "enricher", "props": props}]

    def close(self) -> None:
        self.client.close()
