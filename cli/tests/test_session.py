"""clean starts a new session; resume continues the last one of the same mode."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from arbctl.session import last_session, resolve_session

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_resume_without_a_previous_session_starts_a_new_one(tmp_path: Path) -> None:
    sid = resolve_session(tmp_path, "live", "resume", now=T0)
    assert sid == "s-20250301-120000"
    assert last_session(tmp_path, "live") == sid


def test_resume_returns_the_last_session_of_that_mode(tmp_path: Path) -> None:
    first = resolve_session(tmp_path, "live", "clean", now=T0)
    again = resolve_session(tmp_path, "live", "resume", now=T0 + timedelta(hours=1))
    assert again == first


def test_clean_always_starts_a_new_session_and_records_it(tmp_path: Path) -> None:
    first = resolve_session(tmp_path, "live", "clean", now=T0)
    second = resolve_session(tmp_path, "live", "clean", now=T0 + timedelta(minutes=5))
    assert second != first and second == "s-20250301-120500"
    assert resolve_session(tmp_path, "live", "resume", now=T0 + timedelta(hours=1)) == second


def test_clean_twice_in_one_second_still_gives_distinct_sessions(tmp_path: Path) -> None:
    a = resolve_session(tmp_path, "live", "clean", now=T0)
    b = resolve_session(tmp_path, "live", "clean", now=T0)
    assert a != b


def test_modes_keep_separate_sessions(tmp_path: Path) -> None:
    live = resolve_session(tmp_path, "live", "clean", now=T0)
    paper = resolve_session(tmp_path, "paper", "resume", now=T0 + timedelta(seconds=1))
    assert paper != live
    assert resolve_session(tmp_path, "live", "resume") == live
    assert resolve_session(tmp_path, "paper", "resume") == paper
    data = json.loads((tmp_path / "session.json").read_text())
    assert set(data) == {"live", "paper"}


def test_unreadable_session_file_is_treated_as_no_session(tmp_path: Path) -> None:
    (tmp_path / "session.json").write_text("{not json")
    assert resolve_session(tmp_path, "shadow", "resume", now=T0) == "s-20250301-120000"


def test_unknown_mode_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        resolve_session(tmp_path, "demo", "resume")
