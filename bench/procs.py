"""Peak RSS and CPU time of a process tree, sampled from /proc every 0.5 s in a background thread.

CPU time (user + system, every thread of every process of the tree) is what a contender costs whatever
else the machine is doing; wall time is not, on a shared 2-core machine.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Self

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def _tree_rss(root: int, cpu_out: dict[int, float] | None = None) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            statm = (d / "statm").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        pid = int(d.name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(statm.split()[1]) * _PAGE
        cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        if cpu_out is not None and p in cpu:
            cpu_out[p] = max(cpu_out.get(p, 0.0), cpu[p])
        todo.extend(children.get(p, ()))
    return total


class RssSampler:
    """``with RssSampler(pid) as s: ...`` then ``s.peak`` (bytes): the largest sum over the tree, and
    ``s.cpu_s``: CPU seconds of the tree's processes (as last sampled; a process that ends between two
    samples loses at most its last 0.5 s)."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid, self.interval = pid, interval_s
        self.peak = 0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(self.pid, self._cpu))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_s(self) -> float:
        return round(sum(self._cpu.values()), 2)
