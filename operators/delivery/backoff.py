"""Exponential backoff with jitter (pure: the random source is passed in)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number ``attempt`` (1 = the first retry after the first failure).

    ``ceiling = min(max_ms, base_ms * multiplier ** (attempt - 1))``; the delay is drawn uniformly
    from ``[ceiling * (1 - jitter), ceiling]``, so ``jitter=0`` is deterministic and ``jitter=1`` is
    "full jitter". A provider's ``Retry-After`` hint wins when it is longer.
    """

    base_ms: int = 500
    max_ms: int = 60_000
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base_ms < 1 or self.max_ms < self.base_ms or self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff: need 1 <= base_ms <= max_ms, multiplier >= 1, 0 <= jitter <= 1; got {self}")

    def ceiling_ms(self, attempt: int) -> float:
        if attempt < 1:
            raise ValueError(f"backoff: attempt counts from 1, got {attempt}")
        # cap the exponent so huge attempt numbers do not overflow
        exp = min(attempt - 1, 64)
        return min(float(self.max_ms), self.base_ms * self.multiplier**exp)

    def delay_ms(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> int:
        c = self.ceiling_ms(attempt)
        d = c * (1.0 - self.jitter * rng.random())
        if retry_after_s is not None:
            d = max(d, retry_after_s * 1000.0)
        return int(d)
