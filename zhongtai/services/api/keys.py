"""API keys, scopes and roles: what a key is, what each route needs, and whether a key has it (pure).

A key is shown once, at creation, as ``ztk_<id>_<secret>``: ``id`` (12 hex digits) names the key in logs,
the audit log and ``zhongtai keys list``; ``secret`` (32 random bytes, 64 hex digits) is the part only its
holder knows. The store keeps ``sha256(secret)``, never the secret: the secret is random and 256 bits long,
so a slow password hash (bcrypt, scrypt) would buy nothing against guessing and would cost every request
milliseconds; a stolen store still cannot be turned back into keys.

Scopes (:data:`SCOPES`) name what a key may do; ``<thing>:write`` includes ``<thing>:read`` and ``admin``
includes every scope. A role (:data:`ROLES`) is a named set of scopes given at creation; a key may add
scopes to its role. :data:`ROUTE_SCOPES` maps each route template and method to the one scope it needs;
a route missing from it needs ``admin`` (a new route is closed until someone decides who may call it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

#: Every scope a key can hold, with what it allows (shown by ``zhongtai keys create --help`` and docs/api.md).
SCOPES: dict[str, str] = {
    "profiles:read": "read profiles and recommendations",
    "rules:read": "list and read rules, patterns and journeys",
    "rules:write": "publish, pause, resume and delete rules (includes rules:read)",
    "experiments:read": "read experiment reports",
    "experiments:write": "publish experiments (includes experiments:read)",
    "collect:write": "send events to the collector (zhongtai collect)",
    "audit:read": "read the audit log of control changes",
    "metrics:read": "scrape /metrics",
    "admin": "everything above, and every route not listed in ROUTE_SCOPES",
}

#: Named sets of scopes (``zhongtai keys create --role``).
ROLES: dict[str, frozenset[str]] = {
    "reader": frozenset({"profiles:read", "rules:read", "experiments:read"}),
    "marketer": frozenset({"profiles:read", "rules:write", "experiments:write", "audit:read"}),
    "collector": frozenset({"collect:write"}),
    "monitor": frozenset({"metrics:read"}),
    "admin": frozenset({"admin"}),
}

#: ``(method, route template) -> scope``; ``/healthz`` and ``/openapi.json`` need no key at all.
ROUTE_SCOPES: dict[tuple[str, str], str] = {
    ("GET", "/v1/profiles/{identifier:path}"): "profiles:read",
    ("GET", "/v1/recommendations/{identifier:path}"): "profiles:read",
    ("GET", "/v1/rules"): "rules:read",
    ("GET", "/v1/rules/{id}"): "rules:read",
    ("POST", "/v1/rules"): "rules:write",
    ("DELETE", "/v1/rules/{id}"): "rules:write",
    ("POST", "/v1/rules/{id}/pause"): "rules:write",
    ("POST", "/v1/rules/{id}/resume"): "rules:write",
    ("GET", "/v1/experiments"): "experiments:read",
    ("GET", "/v1/experiments/{key}"): "experiments:read",
    ("POST", "/v1/experiments"): "experiments:write",
    ("GET", "/v1/audit"): "audit:read",
    # list prices are the same for everyone but still the business's data; offers are a person's
    ("GET", "/v1/prices/{item:path}"): "profiles:read",
    ("GET", "/v1/offers/{identifier:path}"): "profiles:read",
    ("GET", "/metrics"): "metrics:read",
    # the visual builder's calls (docs/builder.md): reading and checking definitions, sizing an audience
    ("POST", "/v1/builder/document"): "rules:read",
    ("GET", "/v1/builder/flows/{id}"): "rules:read",
    ("POST", "/v1/expressions/check"): "rules:read",
    ("POST", "/v1/builder/audience"): "profiles:read",
}

#: Routes open to anyone who can reach the API (load balancers' health checks, the schema, the builder's page:
#: static, it holds no data and its calls carry the key typed into it).
OPEN_ROUTES = frozenset({"/healthz", "/openapi.json", "/builder"})

#: The key id the legacy ``api.token`` is logged and rate-limited under (it acts as an ``admin`` key).
TOKEN_KEY_ID = "api.token"

_KEY = re.compile(r"^ztk_([0-9a-f]{12})_([0-9a-f]{64})$")


def required_scope(method: str, route: str) -> str | None:
    """The scope a request to ``route`` (a template) with ``method`` needs; None for an open route."""
    if route in OPEN_ROUTES:
        return None
    return ROUTE_SCOPES.get(("GET" if method == "HEAD" else method, route), "admin")


def expand(scopes: frozenset[str]) -> frozenset[str]:
    """Every scope ``scopes`` grant: ``x:write`` adds ``x:read``, ``admin`` adds all."""
    if "admin" in scopes:
        return frozenset(SCOPES)
    return scopes | {s.replace(":write", ":read") for s in scopes if s.endswith(":write")}


def allows(scopes: frozenset[str], needed: str) -> bool:
    return needed in expand(scopes)


def scopes_of(role: str | None, extra: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """The scopes of a new key: its role's plus ``extra``. Raises ValueError naming an unknown role or scope."""
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    unknown = [s for s in extra if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; choose from {', '.join(SCOPES)}")
    out = (ROLES[role] if role else frozenset()) | frozenset(extra)
    if not out:
        raise ValueError("a key needs a role (--role) or at least one scope (--scope)")
    return out


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key as created: ``token`` is shown once; only ``digest`` is stored."""

    key_id: str
    token: str
    digest: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> NewKey:
    key_id, secret = secrets.token_hex(6), secrets.token_hex(32)
    return NewKey(key_id, f"ztk_{key_id}_{secret}", digest(secret))


def parse(token: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a presented key, None when it is not shaped like one."""
    m = _KEY.match(token)
    return (m.group(1), m.group(2)) if m else None


def secret_matches(secret: str, stored_digest: str) -> bool:
    """Constant-time comparison of a presented secret with the stored digest."""
    return hmac.compare_digest(digest(secret), stored_digest)
