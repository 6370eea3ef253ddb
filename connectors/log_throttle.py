"""Rate-limited error logs: a client that repeats the same error every poll while a service is away (a Kafka
consumer reports "all brokers down" many times a second) says it once, then once per interval how often.

Pure (the caller passes the time): :class:`LogThrottle` decides which lines to write; the caller writes them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LogLine:
    """A line to write. ``suppressed == 0``: the first error of its ``kind`` (after a quiet interval), ``text``
    is that error. ``suppressed > 0``: a summary, ``suppressed`` errors of ``kind`` were not written in the
    last ``over_s`` seconds; ``text`` is the last of them."""

    kind: str
    text: str
    suppressed: int = 0
    over_s: float = 0.0


@dataclass
class _Window:
    since: float
    suppressed: int = 0
    last: str = ""


class LogThrottle:
    """Per kind of error: the first one is written at once; the ones that follow within ``interval_s`` are
    counted, and one summary line per interval says how many (none when there were none). A kind that stays
    quiet for a whole interval is forgotten: its next error is written at once again.

    Call :meth:`note` for each error and :meth:`due` regularly (each poll), so that the summary of an interval
    is written even when no further error comes.
    """

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"LogThrottle: interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self._windows: dict[str, _Window] = {}

    def note(self, kind: str, text: str, now: float) -> list[LogLine]:
        """The lines to write now for an error of ``kind`` at ``now``: due summaries, then this one if first."""
        out = self.due(now)
        w = self._windows.get(kind)
        if w is None:
            self._windows[kind] = _Window(now)
            out.append(LogLine(kind, text))
        else:
            w.suppressed += 1
            w.last = text
        return out

    def due(self, now: float) -> list[LogLine]:
        """The summaries of the intervals that ended by ``now``."""
        out = []
        for kind, w in list(self._windows.items()):
            if now - w.since < self.interval_s:
                continue
            if w.suppressed:
                out.append(LogLine(kind, w.last, w.suppressed, now - w.since))
                self._windows[kind] = _Window(now)
            else:
                del self._windows[kind]
        return out
