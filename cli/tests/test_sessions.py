"""arbctl sessions / reset against a real PostgreSQL ledger and a real Redis."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import psycopg
import pytest
import redis
from typer.testing import CliRunner

from arbctl import sessions
from arbctl.main import app

STATE_ALEMBIC = Path(__file__).resolve().parents[2] / "services" / "state" / "alembic.ini"


@pytest.fixture
def ledger_url(fresh_database: str) -> str:
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(STATE_ALEMBIC))
    cfg.attributes["url"] = fresh_database
    command.upgrade(cfg, "head")
    with psycopg.connect(fresh_database.replace("+psycopg", "")) as conn:
        for sid, mode in (("s-paper-1", "paper"), ("s-paper-2", "paper"), ("s-live-1", "live")):
            conn.execute("INSERT INTO sessions (id, mode, started_at, status) "
                         "VALUES (%s, %s, now(), 'running')", (sid, mode))
    return fresh_database


def test_reset_refuses_without_yes() -> None:
    result = CliRunner().invoke(app, ["reset", "--mode", "paper"])
    assert result.exit_code == 2
    assert "--yes" in result.output


def test_reset_clears_only_that_modes_keys_and_closes_only_its_sessions(
        tmp_path: Path, ledger_url: str, redis_url: str) -> None:
    prefix = "t" + secrets.token_hex(3)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    paper = [f"arb{prefix}:paper:s-paper-{i}:position:BTC-USDT:alpha" for i in (1, 2)]
    live = f"arb{prefix}:live:s-live-1:position:BTC-USDT:alpha"
    for key in (*paper, live):
        r.hset(key, mapping={"quantity": "1"})
    (tmp_path / "session.json").write_text(json.dumps(
        {"paper": {"session": "s-paper-2"}, "live": {"session": "s-live-1"}}))
    try:
        done = sessions.reset_mode(tmp_path, "paper", ledger_url, redis_url, prefix)
        assert done["redis_keys_deleted"] == 2
        assert sorted(done["sessions_closed"]) == ["s-paper-1", "s-paper-2"]
        assert not any(r.exists(k) for k in paper)
        assert r.hget(live, "quantity") == "1"  # another mode is never touched
        rows = {s["id"]: s for s in sessions.list_sessions(ledger_url)}
        assert rows["s-paper-1"]["status"] == "closed" and rows["s-paper-1"]["stopped_at"]
        assert rows["s-live-1"]["status"] == "running"
        assert json.loads((tmp_path / "session.json").read_text()) == {
            "live": {"session": "s-live-1"}}  # the next resume of paper starts a new session
        again = sessions.reset_mode(tmp_path, "paper", ledger_url, redis_url, prefix)
        assert again["redis_keys_deleted"] == 0 and again["sessions_closed"] == []
    finally:
        r.delete(live, *paper)


def test_reset_refuses_while_a_stack_of_that_mode_runs(tmp_path: Path, ledger_url: str) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "stack.json").write_text(json.dumps(
        {"supervisor_pid": os.getpid(), "mode": "paper", "urls": {}}))
    with pytest.raises(sessions.SessionError, match="arbctl down"):
        sessions.reset_mode(tmp_path, "paper", ledger_url, None)
    done = sessions.reset_mode(tmp_path, "live", ledger_url, None)  # another mode is fine
    assert done["sessions_closed"] == ["s-live-1"]


def test_sessions_command_lists_the_ledger(ledger_url: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARB_DATABASE_URL", ledger_url)
    result = CliRunner().invoke(app, ["sessions", "--json"])
    assert result.exit_code == 0, result.output
    ids = {s["id"] for s in json.loads(result.output)["items"]}
    assert ids == {"s-paper-1", "s-paper-2", "s-live-1"}
