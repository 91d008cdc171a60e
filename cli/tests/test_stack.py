"""The dev stack launcher, with real embedded engines and stand-in services.

The real services are exercised by the end-to-end tests in tests/integration; here each
service is a tiny HTTP server answering /healthz and /readyz, so the launcher's own
behaviour (ports, env, state file, status, failure reporting) is what is tested.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arbctl import engines
from arbctl.main import app
from arbctl.stack import (
    PROCESS_NAMES,
    Stack,
    StackError,
    free_port_offset,
    read_state,
)

DUMMY = """
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path in ("/healthz", "/readyz")
        body = json.dumps({k: os.environ.get(k) for k in
                           ("ARB_MODE", "ARB_SESSION", "ARB_NATS_URL", "ARB_DATABASE_URL",
                            "ARB_REDIS_URL", "ARB_HTTP_PORT", "ARB_VENUE_SIM_URL",
                            "ARB_PROFILE")}).encode()
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["ARB_HTTP_PORT"])), H).serve_forever()
"""


def _free_offset() -> int:
    return free_port_offset()


@pytest.fixture
def dummy(tmp_path: Path) -> list[str]:
    script = tmp_path / "dummy_service.py"
    script.write_text(DUMMY)
    return [sys.executable, str(script)]


def test_stack_starts_engines_and_services_reports_status_and_stops(
    tmp_path: Path, dummy: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "arb"
    offset = _free_offset()
    services = [("venue-sim", dummy, 8090), ("state", dummy, 8084)]
    stack = Stack(home, mode="paper", session_mode="clean", port_offset=offset,
                  repo_root=tmp_path, services=services)
    stack.start()
    try:
        rows = stack.wait_healthy(60, ready=True)
        assert [r["name"] for r in rows] == ["nats", "postgres", "redis", "venue-sim", "state"]
        for row in rows:
            assert set(row) == {"name", "pid", "port", "healthy", "ready"}
            assert isinstance(row["pid"], int) and row["healthy"] and row["ready"]
        ports = {r["name"]: r["port"] for r in rows}
        assert ports["nats"] == 14222 + offset and ports["state"] == 8084 + offset

        # each service got the stack's configuration through ARB_* variables
        import httpx

        env = httpx.get(f"http://127.0.0.1:{8084 + offset}/info").json()
        assert env["ARB_MODE"] == "paper" and env["ARB_PROFILE"] == "dev"
        assert env["ARB_SESSION"] == stack.session and env["ARB_HTTP_PORT"] == str(8084 + offset)
        assert env["ARB_NATS_URL"] == f"nats://127.0.0.1:{14222 + offset}"
        assert env["ARB_DATABASE_URL"] == f"postgresql+psycopg://arb@127.0.0.1:{15432 + offset}/arb"
        assert env["ARB_REDIS_URL"] == f"redis://127.0.0.1:{16379 + offset}/0"
        assert env["ARB_VENUE_SIM_URL"] == f"http://127.0.0.1:{8090 + offset}"

        # `arbctl status --json` reads the same state file
        monkeypatch.setenv("ARB_HOME", str(home))
        result = CliRunner().invoke(app, ["status", "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert list(out) == ["processes"]
        assert out["processes"] == stack.processes()
        assert (home / "logs" / "state.log").exists()
        assert read_state(home)["session"] == stack.session
    finally:
        stack.stop()
    assert not (home / "run" / "stack.json").exists()
    for port in ports.values():
        assert not engines.port_open(port)


def test_stack_names_the_process_that_fails_to_start(tmp_path: Path, dummy: list[str]) -> None:
    offset = _free_offset()
    broken = [sys.executable, "-c", "raise SystemExit('boom: no such service yet')"]
    stack = Stack(tmp_path / "arb", port_offset=offset, repo_root=tmp_path,
                  services=[("venue-sim", dummy, 8090), ("strategy", broken, 8082)])
    stack.start()
    try:
        with pytest.raises(StackError) as info:
            stack.wait_healthy(4)
        message = str(info.value)
        assert "strategy" in message and "boom: no such service yet" in message
        assert "venue-sim" not in message
    finally:
        stack.stop()


def test_status_json_without_a_stack_lists_every_process_unhealthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARB_HOME", str(tmp_path))
    monkeypatch.setenv("ARB_PORT_OFFSET", str(_free_offset()))
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["processes"]
    assert [r["name"] for r in rows] == list(PROCESS_NAMES)
    assert all(r["pid"] is None and not r["healthy"] and not r["ready"] for r in rows)
