"""docker/kong.yaml stays in step with the API's own route → scope table (zhongtai/services/api/keys.py)."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from tests.helpers import ROOT
from zhongtai.services.api.keys import OPEN_ROUTES, ROUTE_SCOPES, SCOPES, allows

SAMPLE = {"{identifier:path}": "phone:+86 138/0000", "{id}": "cart_push", "{key}": "coupon-value"}


def kong() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker" / "kong.yaml").read_text())


def _path(template: str) -> str:
    for k, v in SAMPLE.items():
        template = template.replace(k, v)
    return template


def mismatches(doc: dict[str, Any]) -> list[str]:
    """Each zhongtai route that no Kong route, or several, or one with another ACL, serves."""
    [service] = doc["services"]
    out = []
    wanted = [(m, t, s) for (m, t), s in ROUTE_SCOPES.items()] + [("GET", t, None) for t in sorted(OPEN_ROUTES)]
    for method, template, scope in wanted:
        path = _path(template)
        hits = [r for r in service["routes"] if method in r["methods"]
                and any(re.fullmatch(p[1:], path) for p in r["paths"])]
        if len(hits) != 1:
            out.append(f"{method} {template}: {len(hits)} Kong routes")
            continue
        acl = [p["config"]["allow"] for p in hits[0].get("plugins", []) if p["name"] == "acl"]
        holders = None if scope is None else sorted(s for s in SCOPES if allows(frozenset({s}), scope))
        if (sorted(acl[0]) if acl else None) != holders:
            out.append(f"{method} {template}: Kong allows {acl}, zhongtai {holders}")
    return out


def test_every_route_has_one_kong_route_with_its_scope():
    assert mismatches(kong()) == []
    assert {p["name"] for p in kong()["plugins"]} == {"key-auth", "rate-limiting", "request-size-limiting",
                                                      "file-log"}


def test_negative_control_a_missing_or_wider_kong_route_is_found():
    doc = kong()
    dropped = copy.deepcopy(doc)
    dropped["services"][0]["routes"] = [r for r in dropped["services"][0]["routes"] if r["name"] != "audit-read"]
    assert mismatches(dropped) == ["GET /v1/audit: 0 Kong routes"]
    wider = copy.deepcopy(doc)
    [rw] = [r for r in wider["services"][0]["routes"] if r["name"] == "rules-write"]
    rw["plugins"][0]["config"]["allow"].append("rules:read")
    assert len(mismatches(wider)) == 4 and all("Kong allows" in m for m in mismatches(wider))
