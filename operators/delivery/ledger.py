"""The idempotency record of one action: a small state machine (pure) and an in-memory store.

States and transitions (``claim`` and ``finish`` below; the Redis store applies exactly these
functions inside a WATCH/MULTI transaction, so they are atomic across worker processes)::

    (none) ──claim──► claimed ──finish(delivered|failed|suppressed)──► terminal (kept record_ttl_s)
                        │  ▲
                        │  └──claim (lease expired: holder presumed dead; in_doubt=True)
                        └──finish(pending)──► pending ──claim──► claimed (attempts + 1)

``claim`` answers ``acquired`` (the caller may deliver, attempt number ``record.attempts``),
``busy`` (another live holder; retry after ``record.lease_until_ms``) or ``done`` (terminal: never
deliver again). ``src`` is the ``topic/partition/offset`` of the message that claimed it: a
terminal record re-met at the same ``src`` is a replay after a crash (its receipt is re-emitted
in the transaction that commits that offset); met at another ``src`` it is a duplicate message.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Protocol

TERMINAL = frozenset({"delivered", "failed", "suppressed"})
State = Literal["claimed", "pending", "delivered", "failed", "suppressed"]
_INT_FIELDS = ("attempts", "lease_until_ms", "ts_ms")


@dataclass(frozen=True, slots=True)
class Record:
    state: State
    attempts: int
    owner: str = ""
    lease_until_ms: int = 0
    src: str = ""
    in_doubt: bool = False
    provider_id: str = ""
    reason: str = ""
    #: Time of the last transition (the outcome time once terminal).
    ts_ms: int = 0

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_hash(self) -> dict[str, str]:
        return {
            "state": self.state, "attempts": str(self.attempts), "owner": self.owner,
            "lease_until_ms": str(self.lease_until_ms), "src": self.src, "in_doubt": "1" if self.in_doubt else "0",
            "provider_id": self.provider_id, "reason": self.reason, "ts_ms": str(self.ts_ms),
        }

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Record | None:
        if not h:
            return None
        kw: dict[str, object] = {k: h.get(k, "") for k in ("state", "owner", "src", "provider_id", "reason")}
        for k in _INT_FIELDS:
            kw[k] = int(h.get(k) or 0)
        kw["in_doubt"] = h.get("in_doubt") == "1"
        return cls(**kw)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Claim:
    kind: Literal["acquired", "busy", "done"]
    record: Record


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a delivery attempt ended in: ``pending`` (will retry) or a terminal state."""

    state: Literal["pending", "delivered", "failed", "suppressed"]
    provider_id: str = ""
    reason: str = ""


def claim(rec: Record | None, owner: str, src: str, now_ms: int, lease_ms: int) -> tuple[Record | None, Claim]:
    """``(record to write or None when unchanged, answer)`` for ``owner`` asking to deliver."""
    if rec is None or rec.state == "pending":
        new = Record("claimed", (rec.attempts if rec else 0) + 1, owner, now_ms + lease_ms, src,
                     in_doubt=False, reason=rec.reason if rec else "", ts_ms=now_ms)
        return new, Claim("acquired", new)
    if rec.terminal:
        return None, Claim("done", rec)
    if rec.lease_until_ms > now_ms:
        return None, Claim("busy", rec)
    # claimed, lease expired: the holder died between claim and finish; the provider may or may
    # not have the message, so this delivery is in doubt and relies on the idempotency key.
    new = Record("claimed", rec.attempts + 1, owner, now_ms + lease_ms, src, in_doubt=True,
                 reason=rec.reason, ts_ms=now_ms)
    return new, Claim("acquired", new)


def finish(rec: Record | None, owner: str, outcome: Outcome, now_ms: int) -> Record | None:
    """The record after ``owner``'s attempt ended, or None when ``owner`` no longer holds the claim
    (its lease expired and someone else took over: that one now owns the outcome)."""
    if rec is None or rec.state != "claimed" or rec.owner != owner:
        return None
    if outcome.state == "pending":
        return replace(rec, state="pending", owner="", lease_until_ms=0, reason=outcome.reason, ts_ms=now_ms)
    return replace(rec, state=outcome.state, owner="", lease_until_ms=0, provider_id=outcome.provider_id,
                   reason=outcome.reason, ts_ms=now_ms)


class Ledger(Protocol):
    """Durable store of records, one per ``action_id`` of a channel."""

    def claim(self, action_id: str, owner: str, src: str, now_ms: int, lease_ms: int) -> Claim: ...

    def finish(self, action_id: str, owner: str, outcome: Outcome, now_ms: int) -> Record | None: ...

    def get(self, action_id: str) -> Record | None: ...


class MemoryLedger:
    """Records in this process only: forgotten on restart. Unit tests, and the negative control
    of the kill test (``worker.idempotency: false``) that shows what the durable record prevents."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}

    def claim(self, action_id: str, owner: str, src: str, now_ms: int, lease_ms: int) -> Claim:
        new, answer = claim(self.records.get(action_id), owner, src, now_ms, lease_ms)
        if new is not None:
            self.records[action_id] = new
        return answer

    def finish(self, action_id: str, owner: str, outcome: Outcome, now_ms: int) -> Record | None:
        new = finish(self.records.get(action_id), owner, outcome, now_ms)
        if new is not None:
            self.records[action_id] = new
        return new

    def get(self, action_id: str) -> Record | None:
        return self.records.get(action_id)
