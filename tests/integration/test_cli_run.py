"""``zhongtai run --drain`` refuses to continue a retained checkpoint (it could never end)."""

from __future__ import annotations

import pytest

from zhongtai.cli import main


def test_drain_with_a_retained_checkpoint_is_refused(tmp_path, monkeypatch, capsys) -> None:
    chk = tmp_path / "zhongtai-events" / "0123abcd" / "chk-7"
    chk.mkdir(parents=True)
    (chk / "_metadata").write_bytes(b"x")
    monkeypatch.setenv("ZT__FLINK__CHECKPOINT_DIR", tmp_path.as_uri())
    assert main(["run", "--drain"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"zhongtai run --drain: job zhongtai-events has a retained checkpoint ({chk.as_uri()}); a drained run "
        "cannot continue it (its Kafka splits keep the end of the run that wrote it). Run without "
        "--drain to continue that job, or add --fresh (and --group NEW) to drain from scratch.\n"
    )


@pytest.mark.stack
def test_drain_on_a_pattern_that_matches_no_topic_fails_fast(tmp_path, monkeypatch, capsys) -> None:
    """It used to wait for ever (a pattern source waits for topics to appear) and leave a defunct JVM."""
    import time
    import uuid

    from connectors.kafka_admin import create_topics, matching_topics
    from tests.helpers import make_settings

    tag = uuid.uuid4().hex[:8]
    pattern = rf"zt\.nothing{tag}\..*"
    monkeypatch.setenv("ZT__FLINK__CHECKPOINT_DIR", tmp_path.as_uri())
    monkeypatch.setenv("ZT__KAFKA__TOPICS__EVENTS", pattern)
    t0 = time.monotonic()
    assert main(["run", "--drain", "--fresh"]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - t0 < 30
    assert err.startswith(f"zhongtai run: no topic matches the events pattern {pattern!r} on 127.0.0.1:9092")
    assert "Topics that exist:" in err and "zhongtai produce" in err
    # negative control: once a topic matches, the check passes and names it
    topic = f"zt.nothing{tag}.web"
    create_topics(make_settings(), [topic], partitions=1)
    assert matching_topics(make_settings(), pattern) == [topic]
