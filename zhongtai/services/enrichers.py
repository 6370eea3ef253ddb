"""``zhongtai enrich NAME``: run an enricher plugin (entry point ``zhongtai.enrichers``, docs/plugins.md).

It reads the event topics (``kafka.topics.events``, every topic but its own output) in its own consumer group,
hands each event of the plugin's ``event_types`` to ``enrich(event, now_ms)``, and produces what comes back as
new events to ``out_topic`` (default ``zt.events.enriched``, in the namespace; matched by the default events
pattern, so the job reads them like any other source). Events it cannot enrich now (``TryLater``) are retried
``max_attempts`` times with a doubling pause, then go with their reason to ``zt.enrichers.NAME.dlq`` (a name the
events pattern does not match), as do events the plugin refuses (``ValueError``); events that are not JSON objects are the job's to dead-letter and are passed
over here.

Delivery: at least once (connectors/enricher_io.py), with deterministic event ids in what a plugin emits, so the
job's dedup makes it once per event in the profiles.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from config.plugins import ENRICHER_GROUP, TryLater, load_plugin

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings
    from connectors.enricher_io import EnricherIO, InEvent

logger = logging.getLogger(__name__)


@dataclass
class EnrichStats:
    read: int = 0
    matched: int = 0
    emitted: int = 0
    retried: int = 0
    dead: int = 0


class EnricherRunner:
    """The loop around one enricher. ``clock``: epoch seconds (the emitted events' time); ``sleep``: the pause
    between two attempts (tests pass their own)."""

    def __init__(self, name: str, enricher: Any, io: EnricherIO, out_topic: str, dlq_topic: str, *,
                 max_attempts: int = 5, backoff_s: float = 0.5, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name, self.enricher, self.io = name, enricher, io
        self.out_topic, self.dlq_topic = out_topic, dlq_topic
        self.max_attempts, self.backoff_s, self.clock, self.sleep = max_attempts, backoff_s, clock, sleep
        self.stats = EnrichStats()

    def _one(self, m: InEvent) -> None:
        try:
            event = json.loads(m.value or b"")
        except ValueError:
            return
        if not isinstance(event, dict) or event.get("event_type") not in self.enricher.event_types:
            return
        self.stats.matched += 1
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                emitted = self.enricher.enrich(event, int(self.clock() * 1000))
            except TryLater as e:
                reason = f"try_later after {attempt} attempt(s): {e}"
                if attempt < self.max_attempts:
                    self.stats.retried += 1
                    self.sleep(self.backoff_s * 2 ** (attempt - 1))
                continue
            except ValueError as e:
                reason = f"refused: {e}"
                break
            for out in emitted:
                self.io.produce(self.out_topic, m.key, json.dumps(out, ensure_ascii=False, sort_keys=True).encode())
            self.stats.emitted += len(emitted)
            return
        self.stats.dead += 1
        logger.warning("enricher %s: event %s (%s/%d/%d) goes to %s: %s", self.name, event.get("event_id"),
                       m.topic, m.partition, m.offset, self.dlq_topic, reason)
        self.io.produce(self.dlq_topic, m.key, m.value or b"",
                        {"reason": reason, "enricher": self.name, "source": f"{m.topic}/{m.partition}/{m.offset}"})

    def run(self, *, max_events: int | None = None, stop: threading.Event | None = None,
            batch: int = 100, poll_s: float = 0.5) -> EnrichStats:
        """Until ``stop`` is set, or ``max_events`` events were read; offsets are committed after each batch's
        records are acknowledged."""
        while not (stop is not None and stop.is_set()):
            if max_events is not None and self.stats.read >= max_events:
                break
            events = self.io.poll(batch if max_events is None else min(batch, max_events - self.stats.read), poll_s)
            if not events:
                continue
            for m in events:
                self._one(m)
            self.stats.read += len(events)
            self.io.flush()
            self.io.commit()
        return self.stats

    def close(self) -> None:
        self.enricher.close()
        self.io.close()


def build_runner(settings: Settings, name: str, *, out_topic: str | None = None, group: str | None = None,
                 dlq_topic: str | None = None, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> EnricherRunner:
    """The runner of enricher ``name`` with its validated ``plugins.NAME`` section, its topics created."""
    from connectors.enricher_io import EnricherIO
    from connectors.kafka_admin import create_topics

    factory, config = load_plugin(ENRICHER_GROUP, name, settings.plugins)
    out = out_topic or settings.in_namespace("zt.events.enriched")
    dlq = dlq_topic or settings.in_namespace(f"zt.enrichers.{name}.dlq")
    create_topics(settings, [out, dlq])
    io = EnricherIO(settings, settings.kafka.topics.events, group or settings.in_namespace(f"zt-enricher-{name}"),
                    skip=frozenset({out}))
    return EnricherRunner(name, factory(config), io, out, dlq, clock=clock, sleep=sleep)
