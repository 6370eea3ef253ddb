"""The collector's settings, write-key and origin checks, and ``zhongtai collect``'s refusals (no Kafka needed)."""

from __future__ import annotations

import base64

import pytest
from starlette.requests import Request

from config import ConfigError, load_settings
from zhongtai.cli import main
from zhongtai.services.collector.app import Collector, _header_key

KEYS = [{"key": "web-key-0000", "source": "web"}, {"key": "crm-key-1111", "source": "crm"}]


def _request(headers: dict[str, str], scheme: str = "http", host: str = "collect.test") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": host, **headers}.items()]
    return Request({"type": "http", "method": "POST", "path": "/v1/track", "headers": raw, "scheme": scheme,
                    "server": (host, 80), "query_string": b""})


def _collector(**collector) -> Collector:
    return Collector(load_settings(env={}, overrides={"collector": {"write_keys": KEYS, **collector}}))


def test_write_keys_must_be_long_printable_and_name_a_source() -> None:
    for bad, what in (({"key": "short", "source": "web"}, "at least 8 printable ASCII"),
                      ({"key": "has:colon-123", "source": "web"}, "without ':'"),
                      ({"key": "web-key-0000", "source": "Web Site"}, "collector.write_keys.0.source")):
        with pytest.raises(ConfigError, match=what):
            load_settings(env={}, overrides={"collector": {"write_keys": [bad]}})
    s = load_settings(env={"ZT__COLLECTOR__CORS_ORIGINS": "https://a.test, https://b.test"},
                      overrides={"collector": {"write_keys": KEYS}})
    assert s.collector.cors_origins == ("https://a.test", "https://b.test")
    assert "web-key-0000" not in repr(s.collector)  # secrets stay secret


def test_the_key_comes_from_basic_auth_or_the_header() -> None:
    basic = base64.b64encode(b"web-key-0000:").decode()
    assert _header_key(_request({"Authorization": f"Basic {basic}"})) == "web-key-0000"
    assert _header_key(_request({"X-Zt-Write-Key": "crm-key-1111"})) == "crm-key-1111"
    assert _header_key(_request({"Authorization": "Basic !!!not-base64"})) is None
    assert _header_key(_request({"Authorization": "Bearer web-key-0000"})) is None
    assert _header_key(_request({})) is None
    c = _collector()
    assert (c.source_of("web-key-0000"), c.source_of("crm-key-1111"), c.source_of("web-key-000"),
            c.source_of(""), c.source_of(None)) == ("web", "crm", None, None, None)


def test_origins_listed_same_origin_and_star() -> None:
    c = _collector(cors_origins=["https://shop.test/"])
    assert c.origin_allowed(_request({"Origin": "https://shop.test"}))
    assert c.origin_allowed(_request({}))  # not a browser's cross-origin call
    assert c.origin_allowed(_request({"Origin": "http://collect.test"}))  # a page served by the collector
    assert not c.origin_allowed(_request({"Origin": "https://evil.test"}))
    assert not c.origin_allowed(_request({"Origin": "null"}))
    assert _collector(cors_origins=["*"]).origin_allowed(_request({"Origin": "https://evil.test"}))


def test_collect_refuses_to_start_without_a_write_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collect", "--port", "1"]) == 2
    assert "no write keys: add collector.write_keys" in capsys.readouterr().err
