"""Headless Chromium for tests that look at a page as a person would.

``ensure_chromium()`` finds Debian's ``chromium`` (installs it with apt-get when missing, as root,
like zhongtai/stack/redis_server.py does for Redis). ``HeadlessChromium`` starts it with
``--remote-debugging-port`` and drives one page over the Chrome DevTools Protocol (CDP) with a
minimal WebSocket client written on the standard library (RFC 6455 text frames, client masking):
the ``websockets`` package is not a dependency of zhongtai, and ``--dump-dom`` cannot watch one
page change over time, which is what a live dashboard must be shown to do.

Only what the tests need is implemented: navigate, evaluate JavaScript, wait for a condition and
take a PNG screenshot. Nothing happens at import time.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(RuntimeError):
    """Chromium is missing, failed to start, or a DevTools command failed (the message says what to do)."""


def find_chromium() -> str | None:
    """Path of an installed Chromium/Chrome executable, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium() -> str:
    """Path of Chromium; installs Debian's ``chromium`` with apt-get when it is missing.

    Raises :class:`BrowserError` when it is missing and cannot be installed (no apt-get, not
    root, or apt-get failed: its output's tail is in the message).
    """
    path = find_chromium()
    if path:
        return path
    apt = shutil.which("apt-get")
    if not apt:
        raise BrowserError("chromium is not on PATH and apt-get is missing: install Chromium yourself")
    if os.geteuid() != 0:
        raise BrowserError("chromium is not on PATH: run `sudo apt-get install -y chromium`")
    logger.warning("installing Debian's chromium with apt-get (one time, ~100 MB) …")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise BrowserError(
                f"`{' '.join(cmd)}` failed ({p.returncode}); install chromium yourself:\n"
                f"{p.stdout[-2000:]}{p.stderr[-2000:]}"
            )
    path = find_chromium()
    if not path:
        raise BrowserError("apt-get installed chromium but it is not on PATH (expected /usr/bin/chromium)")
    return path


# ---- a minimal WebSocket client (RFC 6455), enough for CDP -------------------------------------------


class _WebSocket:
    """Blocking client: text frames out (masked), text/continuation frames in; ping answered."""

    def __init__(self, url: str, timeout: float) -> None:
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + (f"?{u.query}" if u.query else "")
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BrowserError(f"DevTools websocket {url}: connection closed during the handshake")
            head += chunk
        status, _, rest = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n", 1)[0]:
            raise BrowserError(f"DevTools websocket {url}: handshake refused: {status[:200]!r}")
        self.buf = rest

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise BrowserError("DevTools websocket closed by Chromium")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise BrowserError("DevTools websocket closed by Chromium")
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x1, 0x2, 0x0):
                message += payload
                if fin:
                    return message.decode("utf-8")

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HeadlessChromium:
    """One headless Chromium process with one page, driven over CDP. Use as a context manager.

    ``width`` x ``height`` is the window size (and of screenshots). The browser profile lives in a
    temporary directory removed on close; the process is terminated on close.
    """

    def __init__(self, *, width: int = 1400, height: int = 1000, timeout: float = 30.0) -> None:
        self.width, self.height, self.timeout = width, height, timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: _WebSocket | None = None
        self._id = 0
        self._profile = tempfile.TemporaryDirectory(prefix="zt-chromium-")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        exe = ensure_chromium()
        port = free_port()
        argv = [
            exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
            "--remote-allow-origins=*", f"--user-data-dir={self._profile.name}",
            f"--window-size={self.width},{self.height}", "about:blank",
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        ws_url = None
        while time.monotonic() < deadline and ws_url is None:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                raise BrowserError(f"chromium exited with {self.proc.returncode} at start:\n{err}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    ws_url = pages[0]["webSocketDebuggerUrl"]
            except OSError:
                time.sleep(0.2)
        if ws_url is None:
            self.close()
            raise BrowserError(f"chromium's DevTools endpoint on port {port} did not answer in {self.timeout:.0f} s")
        self.ws = _WebSocket(ws_url, self.timeout)
        self.send("Page.enable")
        self.send("Runtime.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one CDP command and return its ``result`` (events arriving meanwhile are skipped)."""
        if self.ws is None:
            raise BrowserError("chromium is not started: use HeadlessChromium as a context manager")
        self._id += 1
        my_id = self._id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") != my_id:
                continue
            if "error" in msg:
                raise BrowserError(f"CDP {method} failed: {msg['error']}")
            return msg.get("result", {})

    def navigate(self, url: str) -> None:
        """Open ``url`` and wait until ``document.readyState`` is ``complete``."""
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout=self.timeout)

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression in the page (JSON-serialisable values only)."""
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise BrowserError(f"JavaScript failed: {expression!r}: {res['exceptionDetails'].get('text')}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout: float = 10.0, interval: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy; returns its value. Raises BrowserError on time-out
        with the expression's last value."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise BrowserError(f"timed out after {timeout:.0f} s waiting for {expression!r} (last value {value!r})")

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Save a PNG of the viewport to ``path`` (folders created); returns the path."""
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        self._profile.cleanup()
