"""The settings a job ships to its operators: round trip, and a clear error from an older interpreter's modules."""

from __future__ import annotations

import json

import pytest

from config.settings import ConfigError, Settings, settings_from_json, settings_to_json


def test_round_trip_keeps_every_value_and_reveals_the_secret() -> None:
    s = Settings.model_validate({"pii": {"hmac_secret": "s3cret-key"}, "redis": {"port": 7001}})
    back = settings_from_json(settings_to_json(s))
    assert back == s
    assert back.pii.hmac_secret.get_secret_value() == "s3cret-key"
    assert back.redis.port == 7001


def test_keys_unknown_to_the_loaded_modules_say_restart_the_taskmanagers() -> None:
    """A newer job on a TaskManager whose interpreter kept an older zhongtai: the new keys are rejected."""
    doc = json.loads(settings_to_json(Settings()))
    doc["identity"]["from_a_newer_version"] = [1]
    doc["job"]["another_new_key"] = 2
    with pytest.raises(ConfigError) as e:
        settings_from_json(json.dumps(doc))
    msg = str(e.value)
    assert "identity.from_a_newer_version, job.another_new_key" in msg
    assert "restart the TaskManagers, then submit the job again" in msg


def test_other_invalid_values_keep_pydantic_s_own_error() -> None:
    from pydantic import ValidationError

    doc = json.loads(settings_to_json(Settings()))
    doc["redis"]["port"] = "not a port"
    with pytest.raises(ValidationError):
        settings_from_json(json.dumps(doc))
