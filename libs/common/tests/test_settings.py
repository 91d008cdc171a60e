from __future__ import annotations

import subprocess
import sys

import pytest

from arb_common.settings import CommonSettings, Profile, load_settings
from arb_common.subjects import STREAMS, Subjects


def test_defaults_are_dev_profile_and_redact_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARB_DATABASE_URL", "postgresql+psycopg://arb:hunter2@db:5432/arb")
    s = CommonSettings()
    assert s.profile is Profile.dev
    assert "hunter2" not in str(s.public_dict())
    assert "hunter2" not in s.digest()
    assert s.venue_list == ["alpha", "beta"]


def test_bad_value_exits_non_zero_with_one_line_naming_the_setting() -> None:
    code = (
        "from arb_common.settings import CommonSettings, load_settings; "
        "load_settings(CommonSettings)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"ARB_HTTP_PORT": "not-a-port", "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "ARB_HTTP_PORT" in lines[0]


def test_control_token_required_outside_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARB_PROFILE", "prod")
    with pytest.raises(SystemExit) as exc:
        load_settings(CommonSettings)
    assert exc.value.code == 2
    monkeypatch.setenv("ARB_CONTROL_TOKEN", "s3cret")
    s = load_settings(CommonSettings)
    assert s.control_token is not None
    assert "s3cret" not in str(s.public_dict())


def test_mode_must_be_known(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARB_MODE", "yolo")
    with pytest.raises(SystemExit):
        load_settings(CommonSettings)
    assert "ARB_MODE" in capsys.readouterr().err


def test_stream_replicas_default_to_one_and_reach_the_stream_config(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert CommonSettings().stream_replicas == 1
    monkeypatch.setenv("ARB_STREAM_REPLICAS", "3")  # the prod overlay's 3-server NATS
    replicas = CommonSettings().stream_replicas
    assert replicas == 3
    assert {Subjects().stream_config(s, replicas).num_replicas for s in STREAMS} == {3}
    monkeypatch.setenv("ARB_STREAM_REPLICAS", "0")
    with pytest.raises(SystemExit):
        load_settings(CommonSettings)
