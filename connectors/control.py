"""The control topic (``kafka.topics.control``): publishing versioned control messages.

Every part of the job that changes at run time (identity commands, tags, rules, experiments) reads
the same topic and picks the messages of its ``kind``; each message is idempotent and versioned, so
a job replaying the topic from its start ends in the same state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings


class PublishError(RuntimeError):
    pass


def publish(settings: Settings, messages: Iterable[Mapping[str, Any]], *, topic: str | None = None,
            key_of: Any = None) -> int:
    """Send ``messages`` (JSON) to the control topic and wait for every acknowledgement.

    Returns the number sent; raises :class:`PublishError` naming the undelivered ones (is Kafka up?
    ``zhongtai stack status``).
    """
    from confluent_kafka import Producer

    topic = topic or settings.kafka.topics.control
    failures: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(f"{(msg.key() or b'').decode()}: {err}")

    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "enable.idempotence": True})
    n = 0
    for m in messages:
        key = key_of(m) if key_of else f"{m.get('kind')}:{m.get('identifier') or m.get('name') or m.get('key')}"
        producer.produce(topic, key=str(key).encode(), on_delivery=delivered,
                         value=json.dumps(m, ensure_ascii=False, sort_keys=True).encode())
        n += 1
    left = producer.flush(30)
    if left or failures:
        raise PublishError(f"control topic {topic}: {left} message(s) undelivered; {'; '.join(failures)}")
    return n
