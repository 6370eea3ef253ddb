"""Token bucket (pure step function) and an in-process limiter; the shared one lives in Redis
(``connectors.channels.redis_state.RedisTokenBucket``) and uses the same ``take``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Bucket:
    """``tokens`` available at ``updated_ms`` (a float: refill is continuous)."""

    tokens: float
    updated_ms: int


def take(bucket: Bucket | None, now_ms: int, per_s: float, burst: int) -> tuple[Bucket, float]:
    """One request for a token: ``(new bucket, wait_s)``.

    ``wait_s == 0``: a token was taken. Otherwise nothing was taken and a token will be available in
    ``wait_s`` seconds. A missing bucket starts full; a clock that steps back refills nothing.
    """
    if per_s <= 0 or burst < 1:
        raise ValueError(f"rate limit: per_s must be > 0 and burst >= 1, got {per_s}, {burst}")
    if bucket is None:
        bucket = Bucket(float(burst), now_ms)
    elapsed = max(0, now_ms - bucket.updated_ms)
    tokens = min(float(burst), bucket.tokens + elapsed * per_s / 1000.0)
    now = max(now_ms, bucket.updated_ms)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, now), 0.0
    return Bucket(tokens, now), (1.0 - tokens) / per_s


class RateLimiter(Protocol):
    def try_take(self, now_ms: int) -> float:
        """Take a token now (returns 0.0) or say how many seconds until one is available."""
        ...


class LocalTokenBucket:
    """A bucket private to this process."""

    def __init__(self, per_s: float, burst: int) -> None:
        self.per_s, self.burst = per_s, burst
        self.bucket: Bucket | None = None

    def try_take(self, now_ms: int) -> float:
        self.bucket, wait = take(self.bucket, now_ms, self.per_s, self.burst)
        return wait


class Unlimited:
    """No limit (tests' negative control)."""

    def try_take(self, now_ms: int) -> float:
        return 0.0
