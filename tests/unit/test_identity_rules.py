"""Guard-rail configuration: blocklist values and patterns, hashed junk, validation, canonical order."""

from __future__ import annotations

import pytest

from config import load_settings
from config.settings import ConfigError, IdentitySettings, PiiSettings
from operators.identity import IdentityRules
from operators.pii import pseudonymise

RULES = IdentityRules()


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "null",
        "NULL",
        " undefined ",
        "None",
        "NaN",
        "0",
        "-1",
        "anonymous",
        "Unknown",
        "0000",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff",
        "FFFF-FFFF",
        "aaaa",
        "1111111111",
    ],
)
def test_junk_values_are_blocked(value):
    assert RULES.is_blocked("device_id", value)


@pytest.mark.parametrize("value", ["u00012345", "ab", "aaa", "8600811e-5741-496f-a0d1", "o1", "-2", "10"])
def test_real_values_are_not_blocked(value):
    assert not RULES.is_blocked("device_id", value)


def test_hashed_junk_phone_and_email_are_recognised_with_the_pii_settings():
    pii = PiiSettings()
    rules = IdentityRules.from_settings(IdentitySettings(), pii)
    secret = pii.hmac_secret.get_secret_value()
    assert rules.is_blocked("email", pseudonymise("email", " NULL ", secret))
    assert not rules.is_blocked("email", pseudonymise("email", "a@b.cn", secret))
    # Negative control: without the PII settings the hash of junk is not recognised.
    assert not IdentityRules.from_settings(IdentitySettings()).is_blocked(
        "email", pseudonymise("email", "null", secret)
    )


def test_dynamic_overlay():
    r = RULES.with_blocked(["device_id:x"])
    assert r.is_blocked("device_id", "x") and not r.is_junk("device_id", "x")
    assert not r.without(["device_id:x"]).is_blocked("device_id", "x")
    assert RULES.with_isolated(["device_id:y"]).isolated_identifiers == {"device_id:y"}


def test_clean_ids_orders_by_priority_then_value_and_drops_junk_and_unknown_types():
    ids = (
        ("cookie_id", "c"),
        ("imei", "1"),
        ("device_id", "0"),
        ("phone", "h"),
        ("user_id", "u"),
        ("device_id", "b"),
        ("device_id", "a"),
        ("phone", "h"),
    )
    assert RULES.clean_ids(ids) == ("user_id:u", "phone:h", "device_id:a", "device_id:b", "cookie_id:c")


def test_config_section_loads_and_feeds_the_rules():
    s = load_settings(
        env={},
        overrides={"identity": {"max_per_person": {"device_id": 3}, "priority": ["user_id", "device_id"]}},
    )
    rules = IdentityRules.from_settings(s.identity, s.pii)
    assert rules.priority == ("user_id", "device_id") and rules.limits["device_id"] == 3
    assert load_settings(env={}).identity == IdentitySettings()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"priority": ("user_id", "user_id")}, "each identifier type once"),
        ({"priority": ("user_id", "imei")}, "no limit for \\['imei'\\]"),
        (
            {
                "limits": {
                    "user_id": 0,
                    "unionid": 1,
                    "phone": 1,
                    "email": 1,
                    "openid": 1,
                    "device_id": 1,
                    "cookie_id": 1,
                }
            },
            "≥ 1",
        ),
        ({"blocked_patterns": ("(",)}, "not a regular expression"),
    ],
)
def test_bad_rules_fail_with_the_config_key(kwargs, error):
    with pytest.raises(ValueError, match=error):
        IdentityRules(**kwargs)


def test_bad_priority_in_config_fails_at_load():
    with pytest.raises(ConfigError, match="identity.priority"):
        load_settings(env={}, overrides={"identity": {"priority": ["phone", "phone"]}})


def test_refusal_names_the_type_over_its_limit_then_the_type_a_shared_identifier_would_bridge():
    rules = IdentityRules()  # priority user_id, unionid, phone, email, openid, device_id, cookie_id
    dev, phone = rules.rank["device_id"], rules.rank["phone"]
    one_phone = [0, 0, 1, 0, 0, 1, 0]
    assert rules.refusal(dev, one_phone, [0, 0, 1, 1, 0, 0, 0]) == "shared:phone"
    assert rules.refusal(dev, [1, 0, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0, 0]) == "limit:user_id"
    # Negative controls: a direct (non-shareable) link may bring a second phone; no common type merges.
    assert rules.refusal(phone, one_phone, [0, 0, 1, 1, 0, 0, 0]) is None
    assert rules.refusal(dev, one_phone, [0, 0, 0, 1, 0, 1, 0]) is None
    assert IdentityRules(shareable=frozenset()).refusal(dev, one_phone, one_phone) is None


def test_shareable_types_come_from_the_config_and_types_outside_priority_play_no_role():
    s = load_settings(env={}, overrides={"identity": {"shareable_types": ["cookie_id"]}})
    rules = IdentityRules.from_settings(s.identity, s.pii)
    assert rules.shareable == frozenset({"cookie_id"}) and rules.shareable_ranks == frozenset({6})
    assert IdentityRules.from_settings(IdentitySettings()).shareable == frozenset({"device_id", "cookie_id"})
    narrow = IdentityRules(priority=("user_id", "device_id"), limits={"user_id": 1, "device_id": 3})
    assert narrow.shareable_ranks == frozenset({1})
