"""``zhongtai run --drain`` refuses to continue a retained checkpoint (it could never end)."""

from __future__ import annotations

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
