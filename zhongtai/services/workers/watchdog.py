"""The commit watchdog of a channel worker: a Kafka commit that is stuck ends the process.

librdkafka's ``send_offsets_to_transaction`` can block for ever, past its own timeout, when the group
coordinator went away during the transaction (confluentinc/librdkafka#5456). A C call that blocks cannot be
interrupted from Python, so the worker cannot recover by itself: the watchdog thread sees that one commit
attempt (begin → produce → send the offsets → commit) has been running longer than
``worker.commit_watchdog_ms`` and calls ``on_hang`` once. The worker's ``on_hang`` logs one line, counts it
and ends the process with :data:`EXIT_COMMIT_HUNG`, so that its supervisor (Kubernetes, Docker,
systemd, ``zhongtai worker --supervise``) starts it again. Nothing is lost: the stuck transaction is aborted
(by the broker after ``worker.transaction_timeout_ms``, or at once when the restarted worker, with the same
transactional id, fences it), its offsets were not committed, the restart re-reads those messages and the
idempotency ledger keeps every settled action from going out twice.

The clock is injected (``clock``, monotonic seconds): :meth:`CommitWatchdog.overdue` is the whole decision
and is tested without a thread or a wait.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Exit code of a worker whose commit hung (``EX_TEMPFAIL`` of sysexits.h: a temporary failure, start it again).
EXIT_COMMIT_HUNG = 75


@dataclass(frozen=True, slots=True)
class Hang:
    """A commit attempt that ran past the limit: what it commits, the call it is in, for how long."""

    what: str
    step: str
    elapsed_s: float


class CommitWatchdog:
    """Watches one commit attempt at a time (the worker commits from one thread).

    The committing thread calls :meth:`attempt` when an attempt starts (its clock starts), :meth:`step` as it
    enters each call, and :meth:`settled` when the attempt ended, committed or failed (the pause before a
    retry is not watched: a sleep cannot hang). ``limit_s`` None or 0: no watchdog (every call is a no-op).
    """

    def __init__(self, limit_s: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = limit_s or None
        self.clock = clock
        self._lock = threading.Lock()
        self._what, self._step = "", ""
        self._since: float | None = None
        self._thread: threading.Thread | None = None
        self._on_hang: Callable[[Hang], None] | None = None
        self._poll_s = 1.0
        self._stop = threading.Event()
        self.fired: Hang | None = None

    def attempt(self, what: str, step: str = "begin_transaction") -> None:
        with self._lock:
            self._what, self._step, self._since = what, step, self.clock()
        self._ensure_thread()

    def step(self, step: str) -> None:
        with self._lock:
            self._step = step

    def settled(self) -> None:
        with self._lock:
            self._since = None

    def overdue(self) -> Hang | None:
        """The attempt in progress when it has run longer than the limit, else None."""
        with self._lock:
            if self.limit_s is None or self._since is None:
                return None
            elapsed = self.clock() - self._since
            return Hang(self._what, self._step, elapsed) if elapsed > self.limit_s else None

    # ---- the thread ------------------------------------------------------------------------------
    def watch(self, on_hang: Callable[[Hang], None], poll_s: float | None = None) -> None:
        """Call ``on_hang`` (from the watchdog's thread, once) when an attempt is overdue. The thread starts
        with the first attempt and checks every ``poll_s`` (default: a tenth of the limit, at most 1 s)."""
        self._on_hang = on_hang
        self._poll_s = poll_s if poll_s is not None else min(1.0, (self.limit_s or 10.0) / 10)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _ensure_thread(self) -> None:
        if self._thread is not None or self._on_hang is None or self.limit_s is None or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._run, name="zt-commit-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._on_hang is not None
        while not self._stop.wait(self._poll_s):
            hang = self.overdue()
            if hang is not None:
                self.fired = hang
                self._on_hang(hang)
                return


def exit_process(_hang: Hang) -> None:
    """End this process at once with :data:`EXIT_COMMIT_HUNG`, after flushing the logs: a normal exit would
    wait for the stuck call (``sys.exit`` runs the clients' finalizers, which join librdkafka's threads)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_COMMIT_HUNG)
