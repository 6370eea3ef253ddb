"""Everything the dashboard shows that lives in Redis, read in batches (pipelines and SCAN, never KEYS).

Keys (prefix configurable): ``{prefix}:stats`` totals, ``{prefix}:m:scopes`` + ``{prefix}:m:{scope}:{minute}``
counters (connectors/redis_store.py), ``{prefix}:tag:{tag}`` segment sets, ``{prefix}:exp:{key}`` +
``{prefix}:exp:{key}:{variant}`` experiment statistics (zhongtai/services/dashboard/experiments.py).

Tag and experiment keys have no index, so they are discovered with SCAN; that walks the whole
keyspace, so its result is cached for ``discover_every_s`` seconds and only the cheap per-key reads
(SCARD, HGETALL) run on every refresh. ``observe(what, seconds)`` is called after each Redis read
(``what``: totals, funnel, tags, experiments, discover) for the latency histogram.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import experiments as exp
from .funnel import ALL, Funnel, funnel, label_minute, minute_label, rank, window

if TYPE_CHECKING:  # pragma: no cover
    from connectors.redis_store import RedisStore

Observe = Callable[[str, float], None]


def _no_observe(what: str, seconds: float) -> None:
    return None


class DashboardReader:
    """Reads one prefix's live keys. ``clock`` (seconds, monotonic) only paces the SCAN caches.

    ``window_minutes``: how many event-time minutes the funnel covers. The window ends at the
    current minute when the job has written a counter in it (live data), else at the newest
    minute that has an ``all`` counter (a replayed or historical stream), found by SCAN.
    """

    def __init__(
        self,
        store: RedisStore,
        *,
        window_minutes: int = 30,
        discover_every_s: float = 10.0,
        tag_limit: int = 20,
        observe: Observe = _no_observe,
        report: exp.ReportSettings = exp.DEFAULT_REPORT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_minutes < 1:
            raise ValueError(f"dashboard window must be >= 1 minute, got {window_minutes}")
        self.store = store
        self.r = store.client
        self.p = store.prefix
        self.window_minutes = window_minutes
        self.discover_every_s = discover_every_s
        self.tag_limit = tag_limit
        self.observe = observe
        self.report = report
        self.clock = clock
        self._scans: dict[str, tuple[float, list[str]]] = {}

    @contextmanager
    def _timed(self, what: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.observe(what, time.perf_counter() - t0)

    def _scan(self, pattern: str) -> list[str]:
        """Keys matching ``pattern`` (cached for ``discover_every_s``)."""
        now = self.clock()
        hit = self._scans.get(pattern)
        if hit is not None and now - hit[0] < self.discover_every_s:
            return hit[1]
        with self._timed("discover"):
            keys = sorted(set(self.r.scan_iter(match=pattern, count=1000)))
        self._scans[pattern] = (now, keys)
        return keys

    # ---- totals ---------------------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        """``RedisStore.stats()``: valid, unique, dlq:<reason>, dlq, received, duplicates ({} before any)."""
        with self._timed("totals"):
            return self.store.stats()

    # ---- funnel ---------------------------------------------------------------------------------
    def _counter_key(self, scope: str, minute: int) -> str:
        return self.store.counter_key(scope, minute_label(minute))

    def end_minute(self, now_ms: int) -> int:
        """Last minute of the funnel window as of ``now_ms`` (see the class docstring)."""
        now_min = now_ms // 60_000
        live = window(now_min + 1, self.window_minutes + 1)
        with self._timed("funnel"):
            pipe = self.r.pipeline(transaction=False)
            for m in live:
                pipe.exists(self._counter_key(ALL, m))
            found = [m for m, n in zip(live, pipe.execute()) if n]
        if found:
            return max(now_min, found[-1])
        head = f"{self.p}:m:{ALL}:"
        labels = [k[len(head):] for k in self._scan(head + "*")]
        minutes = [label_minute(x) for x in labels if len(x) == 12 and x.isdigit()]
        return max(minutes) if minutes else now_min

    def scopes(self) -> list[str]:
        """Every scope the job has written (``all`` included once it has)."""
        with self._timed("funnel"):
            members: set[str] = self.r.smembers(f"{self.p}:m:scopes")  # type: ignore[assignment]
            return sorted(members)

    def funnels(self, now_ms: int, scopes: Sequence[str] | None = None) -> tuple[int, list[Funnel]]:
        """(end minute, funnels) of ``scopes`` (default: ``all`` + every written scope), ranked."""
        end = self.end_minute(now_ms)
        minutes = window(end, self.window_minutes)
        wanted = list(scopes) if scopes is not None else sorted({ALL, *self.scopes()})
        with self._timed("funnel"):
            pipe = self.r.pipeline(transaction=False)
            for s in wanted:
                for m in minutes:
                    pipe.hgetall(self._counter_key(s, m))
            flat = pipe.execute()
        n = len(minutes)
        out = [funnel(s, minutes, flat[i * n : (i + 1) * n]) for i, s in enumerate(wanted)]
        return end, rank(out)

    # ---- tags -----------------------------------------------------------------------------------
    def tags(self) -> dict[str, Any]:
        """``{"count": number of tags, "top": [{"tag", "size"}]}``, the ``tag_limit`` largest segments
        (ties by name). Keys that are not sets are skipped."""
        head = f"{self.p}:tag:"
        keys = self._scan(head + "*")
        if not keys:
            return {"count": 0, "top": []}
        with self._timed("tags"):
            pipe = self.r.pipeline(transaction=False)
            for k in keys:
                pipe.scard(k)
            sizes = pipe.execute(raise_on_error=False)
        rows = [(k[len(head):], n) for k, n in zip(keys, sizes) if isinstance(n, int) and n > 0]
        rows.sort(key=lambda r: (-r[1], r[0]))
        return {"count": len(rows), "top": [{"tag": t, "size": n} for t, n in rows[: self.tag_limit]]}

    # ---- experiments ----------------------------------------------------------------------------
    def experiments(self) -> list[dict[str, Any]]:
        """One report (zhongtai/services/dashboard/experiments.py) per experiment found, by key."""
        head = f"{self.p}:exp:"
        keys = self._scan(head + "*")
        if not keys:
            return []
        with self._timed("experiments"):
            pipe = self.r.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(k)
            hashes = dict(zip(keys, pipe.execute(raise_on_error=False)))
        metas = {k[len(head):]: h for k, h in hashes.items() if isinstance(h, dict) and ":" not in k[len(head):]}
        variants: dict[str, dict[str, dict[str, str]]] = {key: {} for key in metas}
        for k, h in hashes.items():
            rest = k[len(head):]
            if ":" not in rest or not isinstance(h, dict) or not h:
                continue
            owner = next((m for m in metas if rest.startswith(m + ":")), None)
            key, variant = (owner, rest[len(owner) + 1 :]) if owner else rest.rsplit(":", 1)
            variants.setdefault(key, {})[variant] = h
        return [exp.report_json(key, metas.get(key, {}), variants[key], self.report) for key in sorted(variants)]
