"""Observability, proven on the dev stack: a real Prometheus scrapes the stack that
``arbctl up`` starts, the dashboards' and rules' metrics are checked against the services'
``/metrics``, and the FeedStale alert fires when the simulator drops a venue's WebSocket,
then resolves when the venue comes back.

    uv run python deploy/scripts/observe_dev_stack.py [--json OUT] [--prometheus BIN]

Everything it starts lives in a temporary ARB_HOME on a free port offset (embedded engines),
and is stopped at the end: the stack with ``arbctl down``, Prometheus by its pid.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from arbctl.stack import SERVICES, free_port_offset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules"
STALE_VENUE = "alpha"
CONTROL_VENUE = "beta"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}", file=sys.stderr, flush=True)


def http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - 127.0.0.1 only
        raw = resp.read()
    return json.loads(raw) if raw else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def arbctl(env: dict[str, str], *args: str,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "arbctl", *args], env=env, cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          check=False)


def wait(what: str, check: Any, timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = repr(exc)
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def prometheus_config(path: Path, offset: int) -> None:
    jobs = []
    for name, _, port in SERVICES:
        jobs.append({"job_name": name,
                     "static_configs": [{"targets": [f"127.0.0.1:{port + offset}"]}]})
    conf = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "scrape_timeout": "1s", "external_labels": {"deployment": "dev-stack"}},
        "rule_files": [str(p) for p in sorted(RULES.glob("*.rules.yaml"))],
        "scrape_configs": jobs,
    }
    path.write_text(json.dumps(conf, indent=2))  # JSON is YAML


def feed_stale_alerts(prom: str) -> list[dict[str, Any]]:
    alerts = http("GET", f"{prom}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == "FeedStale"]


def state_of(alerts: list[dict[str, Any]], venue: str) -> str:
    states = {a["state"] for a in alerts if a["labels"].get("venue") == venue}
    return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="arb-observe-"))
        self.offset = int(os.environ.get("ARB_PORT_OFFSET") or free_port_offset())
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("ARB_NATS_URL", "ARB_DATABASE_URL", "ARB_REDIS_URL")}
        self.env.update(ARB_HOME=str(self.tmp / "arb"), ARB_PORT_OFFSET=str(self.offset),
                        PYTHONUNBUFFERED="1")
        self.prom_port = free_port()
        self.prom = f"http://127.0.0.1:{self.prom_port}"
        self.sim = f"http://127.0.0.1:{8090 + self.offset}"
        self.prom_proc: subprocess.Popen[bytes] | None = None
        self.result: dict[str, Any] = {"port_offset": self.offset}

    def port(self, name: str) -> int:
        return {n: p for n, _, p in SERVICES}[name] + self.offset

    # ------------------------------------------------------------ steps
    def start_stack(self) -> None:
        t0 = time.monotonic()
        res = arbctl(self.env, "up", "--detach", "--mode", "live", "--session-mode", "clean",
                     "--timeout", "240")
        if res.returncode != 0:
            raise RuntimeError(f"arbctl up failed: {res.stdout[-2000:]} {res.stderr[-2000:]}")

        def all_ready() -> bool:
            out = arbctl(self.env, "status", "--json", timeout=60)
            rows = json.loads(out.stdout)["processes"]
            return all(r["ready"] for r in rows)

        wait("every process ready (arbctl status --json)", all_ready, 180, every=2)
        self.result["stack_ready_s"] = round(time.monotonic() - t0, 1)
        log(f"dev stack ready in {self.result['stack_ready_s']}s (port offset {self.offset})")

    def start_prometheus(self) -> None:
        conf = self.tmp / "prometheus.yml"
        prometheus_config(conf, self.offset)
        promtool = shutil.which("promtool")
        if promtool:
            subprocess.run([promtool, "check", "config", str(conf)], check=True,
                           capture_output=True)
        log_file = open(self.tmp / "prometheus.log", "wb")  # noqa: SIM115 - lives with the process
        self.prom_proc = subprocess.Popen(
            [self.args.prometheus, f"--config.file={conf}",
             f"--storage.tsdb.path={self.tmp / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{self.prom_port}"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait("Prometheus ready", lambda: urllib.request.urlopen(f"{self.prom}/-/ready",
                                                                timeout=2).status == 200, 60)

        def targets_up() -> bool:
            targets = http("GET", f"{self.prom}/api/v1/targets")["data"]["activeTargets"]
            return len(targets) == len(SERVICES) and all(t["health"] == "up" for t in targets)

        wait("every service scraped by Prometheus", targets_up, 60)
        groups = http("GET", f"{self.prom}/api/v1/rules")["data"]["groups"]
        n_alerts = sum(1 for g in groups for r in g["rules"] if r["type"] == "alerting")
        self.result["prometheus"] = {"targets_up": len(SERVICES), "rule_groups": len(groups),
                                     "alert_rules": n_alerts}
        log(f"Prometheus scrapes {len(SERVICES)} services, {n_alerts} alert rules loaded")

    def check_metrics(self) -> None:
        """Let the stack trade a little (labelled series appear), then cross-check."""
        fills_url = f"http://127.0.0.1:{self.port('state')}/api/fills?limit=5"
        try:
            wait("a first fill", lambda: http("GET", fills_url)["items"], 120, every=2)
        except RuntimeError as exc:
            log(f"no fill yet ({exc}); checking metric names anyway")
        urls = [f"http://127.0.0.1:{self.port(name)}/metrics" for name, _, _ in SERVICES]
        exported = check_metrics.Exported()
        for url in urls:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
                exported.add_text(resp.read().decode())
        uses, recorded = check_metrics.uses()
        problems = check_metrics.check(exported, uses, recorded)
        used = {m for u in uses for m in u.metrics} - recorded
        self.result["metrics_check"] = {"queries": len(uses), "metrics_used": len(used),
                                        "series_exported": len(exported.names),
                                        "problems": problems}
        log(f"metrics check: {len(uses)} queries, {len(used)} metrics, "
            f"{len(problems)} problem(s)")
        for p in problems:
            log("  " + p)
        if problems:
            raise RuntimeError(f"{len(problems)} dashboard/rule metric problem(s)")

    def feed_stale(self) -> None:
        wait("FeedStale inactive before the fault",
             lambda: not feed_stale_alerts(self.prom), 90)
        ws_before = http("GET", f"{self.prom}/api/v1/query?query=arb_market_data_connected")
        connected = [(r["metric"]["venue"], r["value"][1]) for r in ws_before["data"]["result"]]
        log(f"arb_market_data_connected before the fault: {connected}")
        t0 = time.monotonic()
        http("POST", f"{self.sim}/control/venues/{STALE_VENUE}/faults",
             {"kind": "drop_ws", "duration_s": self.args.drop_s})
        log(f"fault drop_ws on {STALE_VENUE} for {self.args.drop_s}s")
        seen: dict[str, float] = {}
        control_fired = False
        deadline = t0 + self.args.drop_s + 180
        while time.monotonic() < deadline:
            alerts = feed_stale_alerts(self.prom)
            st = state_of(alerts, STALE_VENUE)
            control_fired |= state_of(alerts, CONTROL_VENUE) != "inactive"
            now = round(time.monotonic() - t0, 1)
            if st not in seen and st != "inactive":
                seen[st] = now
                symbols = sorted({a["labels"]["symbol"] for a in alerts
                                  if a["labels"].get("venue") == STALE_VENUE})
                log(f"FeedStale {STALE_VENUE} {st} at +{now}s ({', '.join(symbols)})")
            if "firing" in seen and st == "inactive":
                seen["resolved"] = now
                log(f"FeedStale {STALE_VENUE} resolved at +{now}s")
                break
            time.sleep(0.5)
        self.result["feed_stale"] = {"venue": STALE_VENUE, "drop_ws_s": self.args.drop_s,
                                     "pending_after_s": seen.get("pending"),
                                     "firing_after_s": seen.get("firing"),
                                     "resolved_after_s": seen.get("resolved"),
                                     "other_venue_alerted": control_fired}
        if "firing" not in seen:
            raise RuntimeError("FeedStale never fired after the WebSocket was dropped")
        if "resolved" not in seen:
            raise RuntimeError("FeedStale fired but did not resolve after the venue came back")
        if control_fired:
            raise RuntimeError(f"FeedStale also alerted on {CONTROL_VENUE}, whose feed was up")

    def stop(self) -> None:
        if self.prom_proc is not None and self.prom_proc.poll() is None:
            self.prom_proc.send_signal(signal.SIGTERM)
            try:
                self.prom_proc.wait(20)
            except subprocess.TimeoutExpired:
                self.prom_proc.kill()
        res = arbctl(self.env, "down", timeout=180)
        if res.returncode != 0:
            log(f"arbctl down: {res.stdout[-500:]} {res.stderr[-500:]}")
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description="Prometheus on the dev stack, FeedStale proof")
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument("--drop-s", type=float, default=40.0,
                    help="how long the simulator refuses the venue's WebSockets")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary ARB_HOME")
    args = ap.parse_args()
    if not Path(args.prometheus).exists():
        log(f"no prometheus binary at {args.prometheus} (apt-get install prometheus)")
        return 2
    run = Run(args)
    t0 = time.monotonic()
    ok = False
    try:
        run.start_stack()
        run.start_prometheus()
        run.check_metrics()
        run.feed_stale()
        ok = True
    except Exception as exc:  # noqa: BLE001 - report, then clean up
        log(f"FAILED: {exc}")
        logs = run.tmp / "arb" / "logs"
        for f in sorted(logs.glob("*.log")) if logs.is_dir() else []:
            tail = f.read_text(errors="replace").splitlines()[-3:]
            log(f"--- {f.name}: " + " | ".join(tail)[-600:])
    finally:
        run.stop()
    run.result["ok"] = ok
    run.result["total_s"] = round(time.monotonic() - t0, 1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(run.result, indent=2) + "\n")
    print(json.dumps(run.result, indent=2))
    log(f"observe: {'passed' if ok else 'FAILED'} in {run.result['total_s']}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
