"""Event-time sequence, count and absence patterns: a per-person state machine (pure).

One shape for every call::

    pattern_step(state | None, event | None, now_ms, pattern, env=None) -> (state | None, matches, timers)

* With an ``event``: the event is only **buffered** (if the pattern consumes it) and a timer at
  ``event.ts_ms + pattern.lateness_ms`` is asked for. No match is ever emitted from an event call.
* With ``event=None`` (a timer fired; ``now_ms`` is the timer time, which the Flink job only
  reaches when the watermark has passed it): every buffered event with ``ts <= now_ms - lateness``
  and every absence deadline ``<= now_ms - lateness`` is processed **in event-time order**
  (ts, then starts before cancels at the same ms, then event id; a deadline after all events of
  its millisecond). If anything was processed, the processed time (``frontier``) moves to
  ``now_ms - lateness``.

Because processing is in event-time order and happens only behind the watermark, the matches do
not depend on the order in which events arrived, as long as each arrives before the watermark
passes ``its ts + lateness``. An event arriving later than that (``ts <= frontier``) is **too
late**: it is dropped and counted in ``state.too_late``. ``lateness`` is the pattern's allowed
lateness on top of the job's watermark delay; a larger one makes matches later and exact for
later events.

When a match fires (event time; the Flink timer fires when the watermark reaches the time given):

* ``absence`` (start, cancel, within): start event ``s`` matches iff no cancel event ``c`` (other
  than ``s`` itself) has ``s.ts <= c.ts <= s.ts + within`` and no later start of the same key has
  ``s.ts < s'.ts <= s.ts + within`` (a new add_to_cart restarts the 30 minutes). Fires at
  ``s.ts + within + lateness``; the match's ``ts_ms`` is ``s.ts + within``, its ``event_id`` the
  start's. "register and no login within 7 d" and "purchase and no purchase within 30 d" (idle) are
  absence patterns too.
* ``count`` (event, count, within, by): per key, events are counted in order; the event that
  makes ``count`` events with ``last.ts - first.ts <= within`` (since the key's previous match)
  completes a match and the count starts again. Fires at ``e.ts + lateness``; ``ts_ms`` = e.ts.
* ``sequence`` (steps, within): the steps in order (other events may come between) with
  ``last.ts - first.ts <= within``; for each next step only the latest-starting partial run is
  kept (it can only do better). Completing a run emits a match and clears the key's runs.

``by`` (e.g. ``props.item_id``) partitions the pattern; an event without that value is ignored.
State holds only the buffer (events not yet behind the watermark), open absence starts, recent
count timestamps and partial runs; timestamps and runs older than ``frontier - within`` are dropped
at every processing, for every key. ``None`` is returned only for a person the pattern never
saw, or after a pattern version change; otherwise at least the frontier stays, because it must
survive to recognise too-late events (a small value; the job's state TTL bounds it).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from operators.rules.model import Event, EventMatcher, Pattern

__all__ = ["Buffered", "Match", "PatternState", "event_key", "matcher_accepts", "pattern_step"]


@dataclass(frozen=True, slots=True)
class Buffered:
    """An event waiting for the watermark: sort key (ts, rank, event_id), its roles, its key."""

    ts_ms: int
    rank: int
    event_id: str
    roles: tuple[int, ...]
    key: str

    @property
    def order(self) -> tuple[int, int, str]:
        return (self.ts_ms, self.rank, self.event_id)


@dataclass(frozen=True, slots=True)
class PatternState:
    """Per person and pattern. ``open``: absence starts (key, ts, event_id); ``counts``: (key,
    timestamps since the last match); ``runs``: sequence partial runs (key, start_ts, start_id,
    next_step)."""

    version: int
    frontier: int | None = None
    buffer: tuple[Buffered, ...] = ()
    open: tuple[tuple[str, int, str], ...] = ()
    counts: tuple[tuple[str, tuple[int, ...]], ...] = ()
    runs: tuple[tuple[str, int, str, int], ...] = ()
    too_late: int = 0

    def next_due(self, pattern: Pattern) -> int | None:
        """The earliest timer time at which this state has work (None: nothing pending)."""
        times = [b.ts_ms for b in self.buffer[:1]] + [ts + pattern.within_ms for _, ts, _ in self.open]
        return min(times) + pattern.lateness_ms if times else None


@dataclass(frozen=True, slots=True)
class Match:
    """A pattern match. ``event_id`` names the start (absence) or completing event (count,
    sequence) and with ``pattern_id`` makes the trigger key; ``ts_ms`` is its event time."""

    pattern_id: str
    pattern_version: int
    key: str
    event_id: str
    ts_ms: int
    start_ts_ms: int
    count: int

    @property
    def trigger_key(self) -> str:
        return f"pattern:{self.pattern_id}:{self.key}:{self.event_id}"


def event_key(event: Event, by: tuple[str, ...] | None) -> str | None:
    """The ``by`` value of an event as a string ('' without ``by``; None if the event lacks it)."""
    if by is None:
        return ""
    head, *rest = by
    value: Any
    if head == "props":
        value = event.props
    elif head in ("event_type", "type"):
        value = event.event_type
    elif head == "person_id":
        value = event.person_id
    else:
        return None
    for part in rest:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return None if value is None or isinstance(value, Mapping) else str(value)


def matcher_accepts(m: EventMatcher, event: Event, env: Mapping[str, Any] | None) -> bool:
    """The event has the matcher's type and its ``where`` (if any) is true in ``env``."""
    if m.event_type != event.event_type:
        return False
    return m.where is None or m.where.evaluate(env or {}, event.ts_ms) is True


def pattern_step(state: PatternState | None, event: Event | None, now_ms: int, pattern: Pattern,
                 env: Mapping[str, Any] | None = None,
                 ) -> tuple[PatternState | None, tuple[Match, ...], tuple[int, ...]]:
    """Buffer ``event``, or (``event`` None) process everything due at timer time ``now_ms``.

    ``env`` is the expression environment of ``event`` (for ``where`` filters); ``now_ms`` is not
    used when an event is given. Returns the new state, the matches (timer calls only, in event-time
    order) and the timer times to register.
    """
    if state is not None and state.version != pattern.version:
        state = None  # a new pattern version starts from nothing
    if event is not None:
        return _buffer(state, event, pattern, env)
    if state is None:
        return None, (), ()
    cutoff = now_ms - pattern.lateness_ms
    due = (state.buffer and state.buffer[0].ts_ms <= cutoff) or any(
        ts + pattern.within_ms <= cutoff for _, ts, _ in state.open)
    if not due:
        return state, (), ()  # nothing to decide: the state (and its frontier) stays as it is
    return _process(state, cutoff, pattern)


def _buffer(state: PatternState | None, event: Event, pattern: Pattern, env: Mapping[str, Any] | None,
            ) -> tuple[PatternState | None, tuple[Match, ...], tuple[int, ...]]:
    if pattern.paused:
        return state, (), ()
    roles = tuple(i for i, m in enumerate(pattern.matchers) if matcher_accepts(m, event, env))
    key = event_key(event, pattern.by)
    if not roles or key is None:
        return state, (), ()
    st = state or PatternState(pattern.version)
    if st.frontier is not None and event.ts_ms <= st.frontier:
        return replace(st, too_late=st.too_late + 1), (), ()
    rank = 0 if pattern.kind == "absence" and roles == (0,) else (1 if pattern.kind == "absence" else 0)
    item = Buffered(event.ts_ms, rank, event.event_id, roles, key)
    orders = [b.order for b in st.buffer]
    pos = bisect.bisect_left(orders, item.order)
    if pos < len(orders) and orders[pos] == item.order:
        return st, (), ()  # the same event again
    buf = st.buffer[:pos] + (item,) + st.buffer[pos:]
    return replace(st, buffer=buf), (), (event.ts_ms + pattern.lateness_ms,)


def _process(st: PatternState, cutoff: int, pattern: Pattern,
             ) -> tuple[PatternState, tuple[Match, ...], tuple[int, ...]]:
    open_ = {k: (ts, eid) for k, ts, eid in st.open}
    counts = {k: list(v) for k, v in st.counts}
    runs: dict[str, list[tuple[int, str, int]]] = {}
    for k, ts, eid, nxt in st.runs:
        runs.setdefault(k, []).append((ts, eid, nxt))
    matches: list[Match] = []
    i, buf = 0, st.buffer
    within = pattern.within_ms
    while True:
        b = buf[i] if i < len(buf) and buf[i].ts_ms <= cutoff else None
        due = min(((ts + within, k) for k, (ts, _) in open_.items() if ts + within <= cutoff), default=None)
        if b is None and due is None:
            break
        if b is None or (due is not None and due[0] < b.ts_ms):
            assert due is not None
            ts, eid = open_.pop(due[1])
            matches.append(Match(pattern.id, pattern.version, due[1], eid, ts + within, ts, 1))
            continue
        i += 1
        if pattern.kind == "absence":
            _absence(open_, b)
        elif pattern.kind == "count":
            m = _count(counts, b, pattern)
            if m:
                matches.append(m)
        else:
            m = _sequence(runs, b, pattern)
            if m:
                matches.append(m)
    frontier = cutoff if st.frontier is None else max(st.frontier, cutoff)
    new_open = tuple(sorted((k, ts, eid) for k, (ts, eid) in open_.items()))
    timers = tuple(sorted({ts + within + pattern.lateness_ms for k, ts, eid in new_open
                           if (k, ts, eid) not in st.open}))
    # Every later event has ts > frontier: what lies more than `within` before it can never count.
    floor = frontier - within
    kept_counts = ((k, tuple(t for t in v if t >= floor)) for k, v in counts.items())
    new = replace(st, frontier=frontier, buffer=buf[i:], open=new_open,
                  counts=tuple(sorted((k, v) for k, v in kept_counts if v)),
                  runs=tuple(sorted((k, ts, eid, n) for k, rs in runs.items() for ts, eid, n in rs if ts >= floor)))
    return new, tuple(matches), timers


def _absence(open_: dict[str, tuple[int, str]], b: Buffered) -> None:
    if 1 in b.roles:
        cur = open_.get(b.key)
        if cur is not None and cur[1] != b.event_id:
            del open_[b.key]
    if 0 in b.roles:
        open_[b.key] = (b.ts_ms, b.event_id)


def _count(counts: dict[str, list[int]], b: Buffered, pattern: Pattern) -> Match | None:
    ts_list = [t for t in counts.get(b.key, ()) if t >= b.ts_ms - pattern.within_ms] + [b.ts_ms]
    if len(ts_list) >= pattern.count:
        counts.pop(b.key, None)
        return Match(pattern.id, pattern.version, b.key, b.event_id, b.ts_ms, ts_list[0], len(ts_list))
    counts[b.key] = ts_list
    return None


def _sequence(runs: dict[str, list[tuple[int, str, int]]], b: Buffered, pattern: Pattern) -> Match | None:
    n = len(pattern.matchers)
    alive = [r for r in runs.get(b.key, ()) if b.ts_ms - r[0] <= pattern.within_ms]
    best: dict[int, tuple[int, str, int]] = {}

    def keep(run: tuple[int, str, int]) -> None:
        cur = best.get(run[2])
        if cur is None or (run[0], run[1]) > (cur[0], cur[1]):
            best[run[2]] = run

    for start_ts, start_id, nxt in alive:
        keep((start_ts, start_id, nxt))
        if nxt in b.roles:
            if nxt + 1 == n:
                runs.pop(b.key, None)
                return Match(pattern.id, pattern.version, b.key, b.event_id, b.ts_ms, start_ts, n)
            keep((start_ts, start_id, nxt + 1))
    if 0 in b.roles:
        keep((b.ts_ms, b.event_id, 1))
    if best:
        runs[b.key] = sorted(best.values(), key=lambda r: r[2])
    else:
        runs.pop(b.key, None)
    return None
