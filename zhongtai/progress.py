"""The command line's progress display, one look for every verb (``rich.progress``).

``Bar(what, total)`` is a context manager: ``bar.update(done, note)`` moves it (records, rate, elapsed and
an optional note), ``bar.log(text)`` prints a line above it. It writes to stderr and shows nothing when
``enabled`` is false (tests, ``--quiet``) or stderr is not a terminal (then one line per ``every_s``
seconds instead, so a CI log still shows progress without control characters).
"""

from __future__ import annotations

import sys
import time
from typing import Self, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class Bar:
    def __init__(self, what: str, total: int | None, *, enabled: bool = True, unit: str = "records",
                 out: TextIO = sys.stderr, every_s: float = 5.0) -> None:
        self.what, self.total, self.enabled, self.unit, self.out, self.every_s = what, total, enabled, unit, out, every_s
        self.t0 = time.monotonic()
        self._last_line = 0.0
        self._done = 0
        self._live = enabled and out.isatty()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        if self._live:
            self._progress = Progress(
                TextColumn(f"[bold]{self.what}[/]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("{task.fields[note]}"),
                console=Console(file=self.out), transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.what, total=self.total, rate="", note="")
        return self

    def rate(self) -> float:
        return self._done / max(time.monotonic() - self.t0, 1e-9)

    def update(self, done: int, note: str = "") -> None:
        self._done = done
        if not self.enabled:
            return
        rate = f"{self.rate():,.0f} {self.unit}/s"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, rate=rate, note=note)
        elif time.monotonic() - self._last_line >= self.every_s:
            self._last_line = time.monotonic()
            total = f"/{self.total:,}" if self.total else ""
            self.out.write(f"[{self.what}] {done:,}{total} {self.unit}, {rate} {note}\n")
            self.out.flush()

    def log(self, text: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
