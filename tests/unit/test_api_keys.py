"""API keys and scopes (zhongtai/services/api/keys.py) and the audit entry (audit.py): pure."""

from __future__ import annotations

import pytest

from operators.delivery.ratelimit import Bucket, take
from zhongtai.services.api import audit, keys


def test_every_route_needs_its_scope_and_unknown_routes_need_admin():
    assert keys.required_scope("GET", "/v1/profiles/{identifier:path}") == "profiles:read"
    assert keys.required_scope("HEAD", "/v1/rules") == "rules:read"
    assert keys.required_scope("POST", "/v1/rules/{id}/pause") == "rules:write"
    assert keys.required_scope("POST", "/v1/experiments") == "experiments:write"
    assert keys.required_scope("GET", "/v1/prices/{item}") == "admin"  # a route nobody listed is closed
    assert keys.required_scope("GET", "other") == "admin"
    assert (keys.required_scope("GET", "/healthz"), keys.required_scope("GET", "/openapi.json")) == (None, None)
    assert all(scope in keys.SCOPES for scope in keys.ROUTE_SCOPES.values())


def test_write_includes_read_and_admin_includes_all():
    assert keys.allows(frozenset({"rules:write"}), "rules:read")
    assert not keys.allows(frozenset({"rules:read"}), "rules:write")
    assert not keys.allows(frozenset({"rules:write"}), "experiments:read")
    assert not keys.allows(frozenset({"profiles:read"}), "admin")
    assert all(keys.allows(frozenset({"admin"}), s) for s in keys.SCOPES)


def test_roles_and_scopes_of_a_new_key():
    assert keys.scopes_of("marketer") == {"profiles:read", "rules:write", "experiments:write", "audit:read"}
    assert keys.scopes_of("reader", ["collect:write"]) == {"profiles:read", "rules:read", "experiments:read",
                                                          "collect:write"}
    assert keys.scopes_of(None, ["metrics:read"]) == {"metrics:read"}
    with pytest.raises(ValueError, match="unknown role 'boss'; choose one of reader, marketer"):
        keys.scopes_of("boss")
    with pytest.raises(ValueError, match=r"unknown scope\(s\) rules:admin"):
        keys.scopes_of(None, ["rules:admin"])
    with pytest.raises(ValueError, match="a key needs a role"):
        keys.scopes_of(None)


def test_a_key_is_stored_as_a_digest_and_parsed_back():
    k = keys.new_key()
    key_id, secret = keys.parse(k.token) or ("", "")
    assert key_id == k.key_id and len(secret) == 64 and secret not in k.digest
    assert keys.secret_matches(secret, k.digest)
    assert not keys.secret_matches(secret[:-1] + ("0" if secret[-1] != "0" else "1"), k.digest)
    assert keys.parse("s3cret") is None and keys.parse(k.token + "0") is None and keys.parse(k.token.upper()) is None
    assert keys.new_key().key_id != k.key_id


def test_token_bucket_math_with_a_fake_clock():
    """The bucket the API's Lua script applies (operators.delivery.ratelimit.take): 2/s, burst 3."""
    b, waits = None, []
    for now in (0, 0, 0, 0):
        b, w = take(b, now, 2.0, 3)
        waits.append(w)
    assert waits == [0.0, 0.0, 0.0, 0.5]  # three from the full bucket, then half a second to the next
    b, w = take(b, 250, 2.0, 3)
    assert (b, w) == (Bucket(0.5, 250), 0.25)
    b, w = take(b, 500, 2.0, 3)
    assert (b, w) == (Bucket(0.0, 500), 0.0)
    b, w = take(b, 100, 2.0, 3)  # a clock that steps back refills nothing
    assert (b, w) == (Bucket(0.0, 500), 0.5)
    assert take(b, 60_000, 2.0, 3) == (Bucket(2.0, 60_000), 0.0)  # never above the burst


def test_audit_entry_has_old_and_new_version_and_the_diff():
    old = {"version": 1, "definition": {"id": "r", "version": 1, "priority": 5}}
    e = audit.entry(1000, "abc", "rule", "r", "upsert", old, {"id": "r", "version": 2, "priority": 7}, 2, "t/0/9")
    assert {k: e[k] for k in ("key", "kind", "id", "op", "old_version", "new_version", "message_id")} == {
        "key": "abc", "kind": "rule", "id": "r", "op": "upsert", "old_version": 1, "new_version": 2,
        "message_id": "t/0/9"}
    assert [ln for ln in e["diff"].splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")] == [
        '- "priority": 5,', '- "version": 1', '+ "priority": 7,', '+ "version": 2']
    paused = audit.entry(1000, None, "rule", "r", "pause", old, None, None, "t/0/10")
    assert (paused["old_version"], paused["new_version"], paused["diff"]) == (1, 1, "")
    gone = audit.entry(1000, None, "rule", "r", "delete", old, None, None, "t/0/11")
    assert (gone["new_version"], gone["diff"].splitlines()[-1]) == (None, "+null")
    new = audit.entry(1000, None, "rule", "n", "upsert", None, {"id": "n"}, 1, "t/0/12")
    assert (new["old_version"], new["diff"].splitlines()[2]) == (None, "@@ -1 +1,3 @@")
