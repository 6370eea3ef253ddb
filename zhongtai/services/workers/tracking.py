"""Offsets that may be committed and actions parked for a later retry (pure bookkeeping).

``OffsetTracker``: messages finish out of order (a parked retry does not block the partition), but
a partition's committed offset only moves past a contiguous run of finished messages, and the
outputs (receipts, dead letters) of those messages are released in the same step, so they are
produced in the Kafka transaction that commits their offsets: never before, never twice.

``ParkingLot``: actions waiting for a retry time, and per-destination gates: after a transient
failure a destination is closed until its retry is due (the worker then fails attempts on it
without a request instead of hammering it), while every other destination keeps flowing.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

TP = tuple[str, int]
T = TypeVar("T")


class OffsetTracker:
    """Per partition, the messages taken in (in offset order) and which are finished."""

    def __init__(self) -> None:
        self._parts: dict[TP, deque[list[Any]]] = {}
        self._index: dict[tuple[TP, int], list[Any]] = {}
        self._last: dict[TP, int] = {}

    def add(self, tp: TP, offset: int) -> None:
        q = self._parts.setdefault(tp, deque())
        last = self._last.get(tp)
        if last is not None and last >= offset:
            raise ValueError(f"offset tracker: {tp} offset {offset} after {last}: offsets must increase")
        self._last[tp] = offset
        entry = [offset, False, []]
        q.append(entry)
        self._index[(tp, offset)] = entry

    def done(self, tp: TP, offset: int, outputs: Iterable[Any] = ()) -> None:
        entry = self._index.get((tp, offset))
        if entry is None:
            raise KeyError(f"offset tracker: {tp} offset {offset} was never added (or its partition was dropped)")
        entry[1] = True
        entry[2].extend(outputs)

    def drain(self) -> tuple[dict[TP, int], list[Any]]:
        """``({tp: next offset to commit}, outputs released)`` for the finished prefixes; forgets them."""
        offsets: dict[TP, int] = {}
        outputs: list[Any] = []
        for tp, q in self._parts.items():
            while q and q[0][1]:
                off, _, outs = q.popleft()
                del self._index[(tp, off)]
                outputs.extend(outs)
                offsets[tp] = off + 1
        return offsets, outputs

    def drop(self, tps: Iterable[TP]) -> int:
        """Forget revoked partitions (their unfinished messages will be re-read by the new owner)."""
        n = 0
        for tp in tps:
            self._last.pop(tp, None)
            for off, _, _ in self._parts.pop(tp, ()):
                self._index.pop((tp, off), None)
                n += 1
        return n

    def unfinished(self) -> int:
        return sum(1 for q in self._parts.values() for e in q if not e[1])

    def __len__(self) -> int:
        return len(self._index)


class ParkingLot(Generic[T]):
    """Items due at a time (ms), and destinations closed until a time."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, T]] = []
        self._seq = itertools.count()
        self._closed: dict[str, int] = {}

    def park(self, item: T, due_ms: int) -> None:
        heapq.heappush(self._heap, (due_ms, next(self._seq), item))

    def pop_due(self, now_ms: int) -> list[T]:
        out = []
        while self._heap and self._heap[0][0] <= now_ms:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def next_due_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def close(self, destination: str, until_ms: int) -> None:
        self._closed[destination] = max(until_ms, self._closed.get(destination, 0))

    def open(self, destination: str) -> None:
        self._closed.pop(destination, None)

    def closed_until(self, destination: str, now_ms: int) -> int | None:
        """When the destination re-opens, None if it is open now."""
        until = self._closed.get(destination)
        if until is None:
            return None
        if until <= now_ms:
            return None
        return until

    def drop(self, keep: Callable[[T], bool]) -> int:
        before = len(self._heap)
        self._heap = [e for e in self._heap if keep(e[2])]
        heapq.heapify(self._heap)
        return before - len(self._heap)

    def __len__(self) -> int:
        return len(self._heap)
