"""``zhongtai worker --supervise``: run the worker in a child process and start it again when it fails.

For a host without a supervisor of its own; Kubernetes, Docker Compose and systemd restart a worker by
themselves (docs/workers.md, "When a service goes away"). A worker ends itself when it cannot go on in-process:
exit code 75 when a Kafka commit is stuck (``zhongtai.services.workers.watchdog``), 1 when a service stayed
away longer than its retries. Its restart re-reads from the committed offsets and the idempotency ledger keeps
what was delivered from going out twice, so restarting is always safe.

The policy (:class:`RestartPolicy`, pure): a child that exits 0 (stopped, ``--max-messages``,
``--idle-exit-s``) or 2 (bad configuration or command line: a restart cannot help) ends the supervisor with
its code; any other end (75, 1, killed by a signal) is restarted after a pause that doubles from
``first_delay_s`` to ``max_delay_s`` while children keep failing within ``stable_s`` of their start, and is
back to ``first_delay_s`` after one ran longer. SIGTERM and SIGINT go on to the child (it finishes its batch
and commits); the supervisor then ends with the child's code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zhongtai.services.workers.watchdog import EXIT_COMMIT_HUNG

logger = logging.getLogger(__name__)

#: Exit codes that a restart cannot cure.
NO_RESTART = frozenset({0, 2})

_MEANING = {EXIT_COMMIT_HUNG: "its Kafka commit was stuck", 1: "it failed", 130: "interrupted"}


@dataclass
class RestartPolicy:
    """When to start a child again (the module's doc); keeps the current pause between calls."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_s: float = 60.0
    _delay: float = 0.0

    def next_delay(self, code: int, ran_s: float) -> float | None:
        """Seconds to wait before starting the child again after it ended with ``code`` having run ``ran_s``
        seconds; None: do not restart."""
        if code in NO_RESTART:
            return None
        if ran_s >= self.stable_s or self._delay == 0.0:
            self._delay = self.first_delay_s
        else:
            self._delay = min(self._delay * 2, self.max_delay_s)
        return self._delay


def exit_code(status: int) -> int:
    """A ``waitpid`` status as a shell reports it: the exit code, or 128 + the signal that ended the process."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def supervise(run_child: Callable[[], int], name: str, policy: RestartPolicy | None = None) -> int:
    """Run ``run_child()`` in a forked child (its return value is the child's exit code) until it ends with a
    code of ``NO_RESTART`` or the supervisor is told to stop; returns the last child's exit code."""
    policy = policy or RestartPolicy()
    stopping = threading.Event()
    child = 0

    def pass_on(signum: int, _frame: Any) -> None:
        stopping.set()
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    previous = {s: signal.signal(s, pass_on) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        restarts = 0
        while True:
            started = time.monotonic()
            child = os.fork()
            if child == 0:  # pragma: no cover - the child never returns (coverage does not follow a fork)
                for s, h in previous.items():
                    signal.signal(s, h)
                _child_main(run_child)
            if stopping.is_set():  # told to stop between the fork and here
                pass_on(signal.SIGTERM, None)
            _, status = os.waitpid(child, 0)
            child = 0
            code = exit_code(status)
            if stopping.is_set():
                return code
            delay = policy.next_delay(code, time.monotonic() - started)
            if delay is None:
                return code
            restarts += 1
            logger.warning("%s: the process exited with code %d (%s); restart %d in %.1f s (nothing is lost: it "
                           "resumes from the committed offsets)", name, code, _MEANING.get(code, "it ended"),
                           restarts, delay)
            if stopping.wait(delay):
                return code
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _child_main(run_child: Callable[[], int]) -> None:  # pragma: no cover - runs in the forked child
    code = 1
    try:
        code = run_child()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - reported, then the exit code says it
        traceback.print_exc()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
