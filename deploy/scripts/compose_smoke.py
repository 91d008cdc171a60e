"""The staging compose stack, proven: up, every service healthy, fills through the state API,
Prometheus scraping every service with the rules loaded, then everything torn down
(containers, volumes, networks) and checked gone.

    python3 deploy/scripts/compose_smoke.py [--images-env FILE] [--keep] [--timeout S]

Run through ``make compose-smoke`` (deploy/scripts/compose_smoke.sh makes sure a Docker engine
and a compose binary exist and the images are built). Uses its own project name, a generated
env file with random secrets and free 127.0.0.1 ports, so it never touches a developer's
``deploy/compose/.env`` or another stack. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
LONG_RUNNING = ("nats", "postgres", "redis", "venue-sim", "market-data", "strategy",
                "executor", "state", "reconciler", "prometheus")
ONE_SHOT = ("migrate",)
SCRAPED = ("market-data", "strategy", "executor", "state", "reconciler", "venue-sim")
PORTS = {"STATE_API_PORT": 18084, "SIM_CONTROL_PORT": 18090, "PROMETHEUS_PORT": 19090,
         "GRAFANA_PORT": 13000}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}", file=sys.stderr, flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int) -> int:
    if port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_env(path: Path, images_env: Path | None) -> dict[str, str]:
    """The example env file with random secrets, free ports and the images just built."""
    values: dict[str, str] = {}
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    for key, value in list(values.items()):
        if value.startswith("change-me"):
            values[key] = secrets.token_hex(16)
    for key, port in PORTS.items():
        values[key] = str(pick_port(port))
    values["COMPOSE_PROFILES"] = os.environ.get("SMOKE_PROFILES", "sim")
    if images_env is not None:
        for line in images_env.read_text().splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return values


class Compose:
    def __init__(self, binary: str, project: str, env_file: Path, env: dict[str, str]) -> None:
        self.argv = [*shlex.split(binary), "--env-file", str(env_file), "-p", project]
        self.project = project
        self.docker = os.environ.get("DOCKER", "docker")
        # COMPOSE_PROFILES from the environment wins over the env file in every version.
        self.env = dict(os.environ, COMPOSE_PROFILES=env["COMPOSE_PROFILES"])

    def run(self, *args: str, check: bool = True, capture: bool = False,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.argv, *args], cwd=COMPOSE_DIR, env=self.env, text=True,
                              check=check, capture_output=capture, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def docker_json(self, *args: str) -> Any:
        out = subprocess.run([self.docker, *args], check=True, capture_output=True, text=True)
        return json.loads(out.stdout or "[]")

    def containers(self) -> dict[str, dict[str, Any]]:
        """service name -> docker inspect of its container."""
        ids = subprocess.run(
            [self.docker, "ps", "-aq", "--filter",
             f"label=com.docker.compose.project={self.project}"],
            check=True, capture_output=True, text=True).stdout.split()
        if not ids:
            return {}
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c
                for c in self.docker_json("inspect", *ids)}

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        left = []
        for kind, args in (("container", ["ps", "-aq"]), ("volume", ["volume", "ls", "-q"]),
                           ("network", ["network", "ls", "-q"])):
            out = subprocess.run([self.docker, *args, "--filter", label], capture_output=True,
                                 text=True, check=False).stdout.split()
            left += [f"{kind} {x}" for x in out]
        return left


def state_of(c: dict[str, Any]) -> str:
    st = c["State"]
    if st.get("Health"):
        return f"{st['Status']}/{st['Health']['Status']}"
    return f"{st['Status']}/exit={st.get('ExitCode')}"


def wait_healthy(compose: Compose, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        cs = compose.containers()
        pending = []
        for name in LONG_RUNNING:
            c = cs.get(name)
            if c is None or c["State"].get("Health", {}).get("Status") != "healthy":
                pending.append(f"{name}={state_of(c) if c else 'absent'}")
        for name in ONE_SHOT:
            c = cs.get(name)
            if c is None or c["State"]["Status"] != "exited":
                pending.append(f"{name}={state_of(c) if c else 'absent'}")
            elif c["State"]["ExitCode"] != 0:
                raise RuntimeError(f"{name} exited {c['State']['ExitCode']}")
        if not pending:
            return
        now = " ".join(pending)
        if now != last:
            log(f"waiting for: {now}")
            last = now
        time.sleep(2)
    raise RuntimeError(f"not healthy after {timeout:.0f}s: {last}")


def http_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - 127.0.0.1 only
        return json.loads(resp.read())


def wait_fills(port: str, timeout: float) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/fills?limit=1000"
    deadline = time.monotonic() + timeout
    err = ""
    while time.monotonic() < deadline:
        try:
            items = http_json(url)["items"]
            if items:
                return list(items)
            err = "no fills yet"
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            err = repr(exc)
        time.sleep(3)
    raise RuntimeError(f"no fills through {url} after {timeout:.0f}s ({err})")


def check_prometheus(port: str, timeout: float) -> None:
    """Every service is a healthy target, and the alert rules are loaded."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    bad: list[str] = []
    while time.monotonic() < deadline:
        targets = http_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        bad = [f"{job}={health.get(job, 'absent')}" for job in SCRAPED if health.get(job) != "up"]
        if not bad:
            break
        time.sleep(2)
    if bad:
        raise RuntimeError(f"Prometheus targets not up: {' '.join(bad)}")
    groups = http_json(f"{base}/api/v1/rules")["data"]["groups"]
    alerts = sum(1 for g in groups for r in g["rules"] if r["type"] == "alerting")
    if alerts < 8:
        raise RuntimeError(f"Prometheus loaded only {alerts} alert rules")
    log(f"prometheus: {len(SCRAPED)} services scraped (up), {len(groups)} rule groups, "
        f"{alerts} alert rules loaded")


def dump_logs(compose: Compose) -> None:
    for name, c in compose.containers().items():
        log(f"--- {name}: {state_of(c)}; last log lines:")
        subprocess.run([compose.docker, "logs", "--tail", "15", c["Id"]], check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compose", default=os.environ.get("COMPOSE", "docker-compose"))
    ap.add_argument("--images-env", type=Path, default=None)
    ap.add_argument("--project", default=f"arbsmoke{os.getpid()}")
    ap.add_argument("--timeout", type=float, default=300, help="seconds to become healthy")
    ap.add_argument("--fills-timeout", type=float, default=300)
    ap.add_argument("--keep", action="store_true", help="leave the stack running")
    args = ap.parse_args()

    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="arb-compose-")
    try:
        env_file = Path(tmp) / "smoke.env"
        env = write_env(env_file, args.images_env)
        compose = Compose(args.compose, args.project, env_file, env)
        log(f"project {args.project}: state API 127.0.0.1:{env['STATE_API_PORT']}, "
            f"prometheus 127.0.0.1:{env['PROMETHEUS_PORT']}, profiles {env['COMPOSE_PROFILES']}")
        compose.run("config", "-q")
        ok = False
        try:
            compose.run("up", "-d", "--no-build")
            wait_healthy(compose, args.timeout)
            log(f"all {len(LONG_RUNNING)} services healthy, migration done, "
                f"{time.monotonic() - t0:.0f}s after up")
            t_fill = time.monotonic()
            fills = wait_fills(env["STATE_API_PORT"], args.fills_timeout)
            f = fills[0]
            log(f"{len(fills)} fill(s) through the state API after "
                f"{time.monotonic() - t_fill:.0f}s more; first: {f['venue']} {f['symbol']} "
                f"{f['side']} {f['quantity']} @ {f['price']} (trade {f['venue_trade_id']})")
            check_prometheus(env["PROMETHEUS_PORT"], 60)
            ok = True
        except Exception as exc:  # noqa: BLE001 - report, dump logs, tear down
            log(f"FAILED: {exc}")
            dump_logs(compose)
        finally:
            if args.keep:
                log(f"--keep: stack left running (project {args.project}, env {env_file})")
            else:
                compose.run("down", "-v", "--remove-orphans", "-t", "20", check=False)
                left = compose.leftovers()
                if left:
                    log(f"FAILED: left after down: {', '.join(left)}")
                    ok = False
                else:
                    log("torn down: no containers, volumes or networks of the project remain")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"compose smoke {'passed' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
