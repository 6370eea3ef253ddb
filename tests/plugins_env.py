"""Real pieces for the plugin tests (no tests here): the example plugins under ``plugins/`` laid out as pip installs
them, and local HTTP servers speaking WeChat's message API and a logistics service's.

``install_plugin`` writes what pip's install leaves in site-packages: the import package and a
``NAME-VERSION.dist-info`` whose ``entry_points.txt`` comes from the plugin's own ``pyproject.toml``, so the
entry-point discovery the product does (``importlib.metadata``) is the real one. (A pip install itself needs a
build backend from PyPI; the layout is what matters here.)
"""

from __future__ import annotations

import shutil
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from tests.helpers import ROOT
from tests.workers_env import LocalHttpServer

PLUGINS = ROOT / "plugins"


def install_plugin(src: Path, target: Path) -> None:
    meta = tomllib.loads((src / "pyproject.toml").read_text(encoding="utf-8"))
    project = meta["project"]
    for pkg in meta["tool"]["setuptools"]["packages"]:
        shutil.copytree(src / pkg, target / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    info = target / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n",
                                   encoding="utf-8")
    lines = []
    for group, eps in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in eps.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")


@contextmanager
def installed(target: Path, *names: str) -> Iterator[Path]:
    """The plugins ``names`` (folders of ``plugins/``) installed into ``target`` and visible to this process;
    gone again afterwards (entry-point names are read once per process: the cache is cleared both ways)."""
    from config.plugins import _declared

    for n in names:
        install_plugin(PLUGINS / n, target)
    sys.path.insert(0, str(target))
    _declared.cache_clear()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        _declared.cache_clear()
        for mod in [m for m in sys.modules if m.startswith(("zhongtai_wechat", "zhongtai_logistics"))]:
            del sys.modules[mod]


class _Server(LocalHttpServer):
    """A ThreadingHTTPServer on 127.0.0.1 serving ``handle(method, path, query, body) -> (status, json)``."""

    def __init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with outer.lock:
                    status, answer = outer.handle(method, parts.path, query, body, dict(self.headers.items()))
                payload = orjson.dumps(answer)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.lock = threading.Lock()
        self.server = Server(("127.0.0.1", 0), Handler)

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes,
               headers: dict[str, str]) -> tuple[int, Any]:
        raise NotImplementedError



class FakeWeChat(_Server):
    """WeChat's token and message endpoints. Tokens are ``tok-N``; only the newest is valid, and it expires after
    ``sends_per_token`` accepted sends (then 42001, as WeChat answers an expired token). ``errcodes``: openid →
    codes answered to its sends first (one per send), then 0. Every accepted send is recorded in ``sent``."""

    def __init__(self, appid: str = "wx-app", secret: str = "wx-secret", sends_per_token: int = 1_000_000,
                 errcodes: dict[str, list[int]] | None = None) -> None:
        super().__init__()
        self.appid, self.secret, self.sends_per_token = appid, secret, sends_per_token
        self.errcodes = {k: list(v) for k, v in (errcodes or {}).items()}
        self.tokens_issued = 0
        self.uses = 0
        self.sent: list[dict[str, Any]] = []
        self.refused: list[tuple[str, int]] = []

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes,
               headers: dict[str, str]) -> tuple[int, Any]:
        if method == "GET" and path == "/cgi-bin/token":
            if (query.get("appid"), query.get("secret")) != (self.appid, self.secret):
                return 200, {"errcode": 40013, "errmsg": "invalid appid"}
            self.tokens_issued += 1
            self.uses = 0
            return 200, {"access_token": f"tok-{self.tokens_issued}", "expires_in": 7200}
        kind = {"/cgi-bin/message/subscribe/send": "subscribe", "/cgi-bin/message/template/send": "template"}.get(path)
        if method != "POST" or kind is None:
            return 404, {"errcode": 404, "errmsg": "no such api"}
        if query.get("access_token") != f"tok-{self.tokens_issued}" or self.uses >= self.sends_per_token:
            return 200, {"errcode": 42001, "errmsg": "access_token expired"}
        msg = orjson.loads(body)
        queued = self.errcodes.get(msg["touser"])
        code = queued.pop(0) if queued else 0
        if code:
            self.refused.append((msg["touser"], code))
            return 200, {"errcode": code, "errmsg": f"error {code}"}
        self.uses += 1
        self.sent.append({"kind": kind, "token": query["access_token"], **msg})
        return 200, {"errcode": 0, "errmsg": "ok", "msgid": 1000 + len(self.sent)}


class FakeLogistics(_Server):
    """``GET /orders/{order_id}``: ``orders[order_id]`` (200), 404 when unknown; ``fail_first[order_id]`` 503s first.
    Records every asked order id in ``asked``."""

    def __init__(self, orders: dict[str, dict[str, Any]], fail_first: dict[str, int] | None = None,
                 token: str | None = None) -> None:
        super().__init__()
        self.orders, self.fail_first, self.token = orders, dict(fail_first or {}), token
        self.asked: list[str] = []

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes,
               headers: dict[str, str]) -> tuple[int, Any]:
        if self.token and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"error": "no token"}
        order = path.removeprefix("/orders/")
        self.asked.append(order)
        if self.fail_first.get(order, 0) > 0:
            self.fail_first[order] -= 1
            return 503, {"error": "busy"}
        if order not in self.orders:
            return 404, {"error": "unknown order"}
        return 200, self.orders[order]
