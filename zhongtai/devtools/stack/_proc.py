"""Process plumbing shared by every service of the local stack.

Contract: a service we started has a PID file ``<run_dir>/pids/<name>.pid`` holding one PID; it is
"ours" only while that PID is alive *and* its command line still contains the service's marker
(so a recycled PID never counts as ours). Output of every process goes to
``<run_dir>/logs/<name>.log``; nothing reaches the terminal.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger(__name__)

Log = Callable[[str], None]


#: Variables a process that has run PyFlink carries (gateway, loopback server, Beam boot paths,
#: PyFlink's own conf dirs). A service started from such a process (the fault tests restart the
#: TaskManager from pytest) must not inherit them: its Python workers then dial a dead loopback
#: server and die ("Process died with exit code 0").
_PYFLINK_RUNTIME_VARS = frozenset({
    "PYFLINK_GATEWAY_DISABLED", "_PYFLINK_CONN_INFO_PATH", "PYTHON_LOOPBACK_SERVER_ADDRESS",
    "_PYTHON_WORKER_MEMORY_LIMIT", "BOOT_LOG_DIR", "FLINK_CONF_DIR", "FLINK_LIB_DIR", "FLINK_OPT_DIR",
    "FLINK_PLUGINS_DIR", "FLINK_BIN_DIR", "FLINK_HOME", "TABLE_LOCAL_TIME_ZONE",
})


def inherited_env() -> dict[str, str]:
    """This process's environment without the PyFlink runtime variables."""
    return {k: v for k, v in os.environ.items() if k not in _PYFLINK_RUNTIME_VARS}


class StackError(RuntimeError):
    """A local service cannot be started or stopped; the message says what to do."""


@dataclass(frozen=True)
class Paths:
    """Folders of the local stack: ``run`` (data/logs/pids) and ``home`` (jar cache)."""

    run: Path
    home: Path

    @property
    def logs(self) -> Path:
        return self.run / "logs"

    @property
    def pids(self) -> Path:
        return self.run / "pids"

    @property
    def data(self) -> Path:
        return self.run / "data"

    @property
    def conf(self) -> Path:
        return self.run / "conf"

    @property
    def lib(self) -> Path:
        return self.home / "lib"

    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def make(self) -> None:
        for d in (self.logs, self.pids, self.data, self.conf):
            d.mkdir(parents=True, exist_ok=True)


def paths_of(settings: Settings) -> Paths:
    return Paths(run=settings.run_dir, home=settings.home)


# ---------------------------------------------------------------------------------------------
# tools


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if not path:
        raise StackError(f"`{name}` is not on PATH: {hint}")
    return path


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return require_tool(
        "java", "install a JDK 17 (apt-get install -y openjdk-17-jdk-headless) or set JAVA_HOME"
    )


# ---------------------------------------------------------------------------------------------
# PIDs and ports


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_alive(pid: int, marker: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = Path(f"/proc/{pid}/stat")
    try:
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":  # zombie: exited, not reaped
            return False
    except (OSError, IndexError):
        return False
    if marker is None:
        return True
    cmd = _cmdline(pid)
    return any(m in cmd for m in marker.split("|"))  # "a|b": either marker (a script exec'ing java)


def read_pid(pid_file: Path, marker: str | None = None) -> int | None:
    """The live PID recorded in ``pid_file`` (whose command line holds ``marker``), else None."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid, marker) else None


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_owner(port: int) -> str:
    """Best effort 'pid=… cmd' of whoever listens on ``port`` (via ``ss``), for error messages."""
    ss = shutil.which("ss")
    if not ss:
        return "unknown process"
    try:
        out = subprocess.run(
            [ss, "-ltnpH", f"sport = :{port}"], check=False, capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown process"
    found = re.findall(r'\("([^"]+)",pid=(\d+)', out)
    return ", ".join(f"{cmd} pid {pid}" for cmd, pid in found) or "unknown process"


def check_ports_free(service: str, ports: Sequence[int]) -> None:
    busy = [p for p in ports if port_open(p)]
    if busy:
        p = busy[0]
        raise StackError(
            f"{service}: port {p} on 127.0.0.1 is already in use by a process zhongtai did not start "
            f"({port_owner(p)}). Stop that process, or move zhongtai to another port in your config "
            f"(settings.stack / kafka / redis / hbase / flink), then run `zhongtai stack up` again."
        )


# ---------------------------------------------------------------------------------------------
# start / wait / stop


def tail(path: Path, lines: int = 25) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return f"(no log file {path})"
    return "\n".join(data.splitlines()[-lines:])


def spawn(
    name: str,
    argv: Sequence[str],
    paths: Paths,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached (own session), output appended to the service log; write the PID file."""
    log_file = paths.log_file(name)
    with log_file.open("ab") as out:
        out.write(
            f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} zhongtai starts {name}: {' '.join(argv)}\n".encode()
        )
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(cwd or paths.run),
            env={**inherited_env(), **(env or {})},
            start_new_session=True,
            close_fds=True,
        )
    paths.pid_file(name).write_text(f"{proc.pid}\n")
    return proc.pid


def run_checked(name: str, argv: Sequence[str], paths: Paths, env: Mapping[str, str] | None = None,
                secrets: Sequence[str] = ()) -> None:
    """Run a one-shot command (storage format …) with its output in the service log; each of ``secrets`` is
    written to the log as ``****``."""
    log_file = paths.log_file(name)
    shown = " ".join(argv)
    for secret in secrets:
        shown = shown.replace(secret, "****")
    with log_file.open("ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} zhongtai runs: {shown}\n".encode())
        out.flush()
        rc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(paths.run),
            env={**inherited_env(), **(env or {})},
            check=False,
        ).returncode
    if rc != 0:
        raise StackError(
            f"{name}: `{' '.join(argv[:1])} …` exited with {rc}; read {log_file}:\n{tail(log_file)}"
        )


def wait_healthy(
    name: str,
    probe: Callable[[], bool],
    pid: int | None,
    marker: str | None,
    log_file: Path,
    timeout_s: float,
    interval_s: float = 1.0,
) -> float:
    """Poll ``probe`` until it answers True; fail early if the process died. Returns seconds waited."""
    t0 = time.monotonic()
    while True:
        try:
            if probe():
                return time.monotonic() - t0
        except Exception as e:  # noqa: BLE001 - any client error means "not yet healthy"
            logger.debug("%s not healthy yet: %s", name, e)
        if pid is not None and not pid_alive(pid, marker):
            raise StackError(f"{name} exited during start-up; read {log_file}. Last lines:\n{tail(log_file)}")
        if time.monotonic() - t0 > timeout_s:
            raise StackError(
                f"{name} not healthy within {timeout_s:.0f}s (settings.stack.start_timeout_s); "
                f"read {log_file}. Last lines:\n{tail(log_file)}"
            )
        time.sleep(interval_s)


def terminate(pid: int, marker: str | None, grace_s: float = 20.0) -> str:
    """SIGTERM the process group led by ``pid`` (or the PID), SIGKILL after ``grace_s``."""
    if not pid_alive(pid, marker):
        return "not running"

    def _signal(sig: int) -> None:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    _signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return "stopped"
        time.sleep(0.2)
    _signal(signal.SIGKILL)
    for _ in range(50):
        if not pid_alive(pid, marker):
            break
        time.sleep(0.1)
    return f"killed after {grace_s:.0f}s"


def kill_now(pid: int, marker: str | None) -> str:
    """SIGKILL the process group led by ``pid`` (or the PID) and wait until it is gone (a crash, no cleanup)."""
    if not pid_alive(pid, marker):
        return "not running"
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for _ in range(100):
        if not pid_alive(pid, marker):
            return "killed"
        time.sleep(0.05)
    return "killed (still exiting after 5s)"


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
