"""Pipeline health from the job's totals: events/s and DLQ rates by reason (pure).

The job writes absolute totals to Redis (``{prefix}:stats``: ``valid``, ``unique``,
``dlq:<reason>``; :meth:`connectors.redis_store.RedisStore.stats` derives ``received`` and ``dlq``).
Rates are deltas of those totals between two samples divided by the seconds between them.
Time is an input: the caller stamps each sample.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TotalsSample:
    """The totals as read at time ``t`` (seconds, any monotonic clock)."""

    t: float
    totals: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Health:
    """Rates over ``window_s`` seconds; every rate is None until two samples span some time.

    ``events_per_s``: records received (valid + DLQ) per second; ``dlq_per_s``: DLQ records per
    second; ``dlq_share``: DLQ / received over the window (None when nothing was received);
    ``dlq_per_s_by_reason``: per reason (every reason seen in the newest totals, 0.0 when it did
    not move).
    """

    window_s: float | None = None
    events_per_s: float | None = None
    valid_per_s: float | None = None
    dlq_per_s: float | None = None
    dlq_share: float | None = None
    dlq_per_s_by_reason: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "events_per_s": self.events_per_s,
            "valid_per_s": self.valid_per_s,
            "dlq_per_s": self.dlq_per_s,
            "dlq_share": self.dlq_share,
            "dlq_per_s_by_reason": dict(sorted(self.dlq_per_s_by_reason.items())),
        }


def _received(t: Mapping[str, int]) -> int:
    if "received" in t:
        return int(t["received"])
    return int(t.get("valid", 0)) + _dlq(t)


def _dlq(t: Mapping[str, int]) -> int:
    if "dlq" in t:
        return int(t["dlq"])
    return sum(int(v) for k, v in t.items() if k.startswith("dlq:"))


def rates(prev: TotalsSample, cur: TotalsSample) -> Health:
    """Rates between two samples. A total that went down (the prefix was reset, a new job started
    from zero) makes the pair meaningless: every rate is None then, as when no time passed."""
    dt = cur.t - prev.t
    if dt <= 0:
        return Health()
    keys = set(prev.totals) | set(cur.totals)
    if any(int(cur.totals.get(k, 0)) < int(prev.totals.get(k, 0)) for k in keys):
        return Health()
    d_received = _received(cur.totals) - _received(prev.totals)
    d_dlq = _dlq(cur.totals) - _dlq(prev.totals)
    d_valid = int(cur.totals.get("valid", 0)) - int(prev.totals.get("valid", 0))
    by_reason = {
        k[4:]: (int(v) - int(prev.totals.get(k, 0))) / dt for k, v in cur.totals.items() if k.startswith("dlq:")
    }
    return Health(
        window_s=dt,
        events_per_s=d_received / dt,
        valid_per_s=d_valid / dt,
        dlq_per_s=d_dlq / dt,
        dlq_share=(d_dlq / d_received) if d_received else None,
        dlq_per_s_by_reason=by_reason,
    )


class RateWindow:
    """Samples of the last ``window_s`` seconds; :meth:`add` returns the rates across the window
    (newest sample vs the oldest one still inside it), so one slow tick does not make a spike.

    Holds at most ``max_samples`` samples. Not thread-safe: one per sampler.
    """

    def __init__(self, window_s: float = 10.0, max_samples: int = 600) -> None:
        if window_s <= 0:
            raise ValueError(f"rate window must be > 0 s, got {window_s}")
        self.window_s = window_s
        self.samples: deque[TotalsSample] = deque(maxlen=max_samples)

    def add(self, sample: TotalsSample) -> Health:
        if self.samples and sample.t < self.samples[-1].t:
            self.samples.clear()  # the clock went back: start over
        self.samples.append(sample)
        while len(self.samples) > 2 and sample.t - self.samples[1].t >= self.window_s:
            self.samples.popleft()
        h = rates(self.samples[0], sample)
        if h.window_s is None and len(self.samples) > 1:
            # a reset inside the window: keep only the newest sample
            self.samples.clear()
            self.samples.append(sample)
        return h
