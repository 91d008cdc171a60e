"""The staging compose file: what it publishes, in what order things start, settings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from .conftest import DEPLOY, load_module

COMPOSE_DIR = DEPLOY / "compose"
SERVICES = ("market-data", "strategy", "executor", "state", "reconciler")
ENGINE_PORTS = {4222, 5432, 6379}  # the machine's own NATS / PostgreSQL / Redis
TEST_PORTS = set(range(8081, 8093))
dockerfiles = load_module("deploy/docker/generate.py")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())


def _env_example() -> dict[str, str]:
    out = {}
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v
    return out


def _default(value: str) -> str:
    """``${VAR:-default}`` -> the default as compose would resolve it with the example env."""
    env = _env_example()

    def sub(m: re.Match[str]) -> str:
        return env.get(m.group(1), m.group(3) or "")
    return re.sub(r"\$\{(\w+)(:-([^}]*)|:\?[^}]*)?\}", sub, value)


def test_only_operator_ports_are_published_on_loopback(compose: dict[str, Any]) -> None:
    published = {}
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            host, host_port, container_port = _default(port).rsplit(":", 2)
            assert host == "127.0.0.1", f"{name} publishes on {host}"
            published[name] = (int(host_port), int(container_port))
    assert set(published) == {"state", "venue-sim", "prometheus", "grafana"}
    host_ports = {hp for hp, _ in published.values()}
    assert not host_ports & (ENGINE_PORTS | TEST_PORTS)
    for engine in ("nats", "postgres", "redis"):
        assert "ports" not in compose["services"][engine]


def test_services_start_after_healthy_engines_and_the_migration(compose: dict[str, Any]) -> None:
    for name in SERVICES:
        deps = compose["services"][name]["depends_on"]
        assert deps == {"nats": {"condition": "service_healthy"},
                        "postgres": {"condition": "service_healthy"},
                        "redis": {"condition": "service_healthy"},
                        "migrate": {"condition": "service_completed_successfully"}}
    assert compose["services"]["migrate"]["entrypoint"][:2] == ["alembic", "-c"]
    for engine in ("nats", "postgres", "redis", "prometheus"):
        assert compose["services"][engine]["healthcheck"]["test"]


def test_arb_containers_are_locked_down_and_restart_on_failure(compose: dict[str, Any]) -> None:
    for name in (*SERVICES, "venue-sim", "migrate"):
        svc = compose["services"][name]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in svc["security_opt"]
        assert svc["restart"] == ("no" if name == "migrate" else "on-failure")
        env = svc["environment"]
        assert env["ARB_NATS_URL"] == "nats://nats:4222"
        assert "${POSTGRES_PASSWORD:?" in env["ARB_DATABASE_URL"]


def test_profiles_sim_and_grafana_are_on_in_the_example(compose: dict[str, Any]) -> None:
    assert compose["services"]["venue-sim"]["profiles"] == ["sim"]
    assert compose["services"]["grafana"]["profiles"] == ["grafana"]
    assert _env_example()["COMPOSE_PROFILES"] == "sim,grafana"


def test_every_required_variable_is_in_the_example_and_no_secret_is_real() -> None:
    text = (COMPOSE_DIR / "docker-compose.yml").read_text()
    env = _env_example()
    for var in set(re.findall(r"\$\{(\w+)", text)):
        assert var in env, f"{var} missing from .env.example"
    for key in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "ARB_CONTROL_TOKEN",
                "GRAFANA_ADMIN_PASSWORD"):
        assert env[key].startswith("change-me")
    assert ".env" in (COMPOSE_DIR / ".gitignore").read_text().split()


def test_backend_network_has_no_route_out(compose: dict[str, Any]) -> None:
    assert compose["networks"]["backend"]["internal"] is True
    for engine in ("nats", "postgres", "redis"):
        assert compose["services"][engine]["networks"] == ["backend"]


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    conf = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in conf["scrape_configs"]}
    for svc in dockerfiles.SERVICES:
        assert jobs[svc.name] == [f"{svc.name}:{svc.port}"]
    assert conf["rule_files"] == ["/etc/prometheus/rules/*.rules.yaml"]


def test_docker_compose_config_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing (apt-get install docker-compose)")
        pytest.skip("docker-compose not installed (CI installs it)")
    env = {**os.environ, **_env_example()}
    for files in (["-f", "docker-compose.yml"],
                  ["-f", "docker-compose.yml", "-f", "docker-compose.venues.yml"]):
        res = subprocess.run([binary, "--env-file", ".env.example", *files, "config", "-q"],
                             cwd=COMPOSE_DIR, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
