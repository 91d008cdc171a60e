"""Kubernetes manifests of the five services, generated (kustomize base: deploy/k8s/base).

    uv run python deploy/k8s/generate.py          # rewrite deploy/k8s/base/generated/*.yaml
    uv run python deploy/k8s/generate.py --check  # exit 1 if a committed file differs

Writes, per service: Deployment (probes, resources, securityContext), Service, ServiceMonitor,
PodDisruptionBudget and NetworkPolicies, plus the PrometheusRule built from the same rule
files Prometheus loads in compose (deploy/prometheus/rules/*.rules.yaml). Everything that is
not repeated per service (NATS, Redis, the migration Job, kustomization) is written by hand.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "deploy" / "k8s" / "base" / "generated"
RULES = ROOT / "deploy" / "prometheus" / "rules"
PART_OF = {"app.kubernetes.io/part-of": "arb"}
# kube-prometheus-stack's Prometheus selects ServiceMonitors / PrometheusRules by this label.
PROM_RELEASE = {"release": "kube-prometheus-stack"}
MONITORING_NS = "monitoring"


@dataclass(frozen=True)
class Svc:
    name: str
    port: int
    database: bool = False  # ledger access (ARB_DATABASE_URL)
    redis: bool = False  # hot state (ARB_REDIS_URL)
    venue_keys: bool = False  # signed venue API (mounted secret files)
    venues: bool = False  # talks to the venues (egress 443 / the simulator)
    api: bool = False  # HTTP API for operators (ingress from api clients)
    strategy: str = "Recreate"  # single owner of its bus consumers: never two at once


SERVICES: tuple[Svc, ...] = (
    Svc("market-data", 8081, venues=True, strategy="RollingUpdate"),
    Svc("strategy", 8082, redis=True),
    Svc("executor", 8083, venue_keys=True, venues=True),
    Svc("state", 8084, database=True, redis=True, api=True),
    Svc("reconciler", 8085, database=True, venue_keys=True, venues=True),
)


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "service", **PART_OF}


def secret_env(name: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": "arb-secrets", "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def container(s: Svc) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "ARB_HTTP_HOST", "value": "0.0.0.0"},
        {"name": "ARB_HTTP_PORT", "value": str(s.port)},
        secret_env("ARB_CONTROL_TOKEN", "control-token"),
    ]
    if s.database:
        env.append(secret_env("ARB_DATABASE_URL", "database-url"))
    if s.redis:
        env.append(secret_env("ARB_REDIS_URL", "redis-url"))
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if s.venue_keys:
        env.append({"name": "ARB_SECRETS_DIR", "value": "/run/secrets/arb"})
        mounts.append({"name": "venue-keys", "mountPath": "/run/secrets/arb", "readOnly": True})
    probe = {"path": "/healthz", "port": "http"}
    return {
        "name": s.name,
        "image": f"arb/{s.name}:0.1.0",
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": s.port, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": "arb-config"}}],
        "env": env,
        "startupProbe": {"httpGet": probe, "periodSeconds": 2, "failureThreshold": 60},
        "livenessProbe": {"httpGet": probe, "periodSeconds": 10, "timeoutSeconds": 3,
                          "failureThreshold": 6},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5,
                           "timeoutSeconds": 3, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "100m", "memory": "192Mi"},
                      "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "privileged": False,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }


def pod_labels(s: Svc) -> dict[str, str]:
    out = labels(s.name) | {"arb.io/nats-client": "true"}
    if s.redis:
        out["arb.io/redis-client"] = "true"
    if s.database:
        out["arb.io/db-client"] = "true"
    if s.venues:
        out["arb.io/venue-client"] = "true"
    return out


def deployment(s: Svc) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    if s.venue_keys:
        volumes.append({"name": "venue-keys", "secret": {
            "secretName": "arb-venue-keys", "optional": True, "defaultMode": 0o400}})
    strategy: dict[str, Any] = {"type": s.strategy}
    if s.strategy == "RollingUpdate":
        strategy["rollingUpdate"] = {"maxUnavailable": 0, "maxSurge": 1}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": s.name, "labels": labels(s.name)},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "strategy": strategy,
            "selector": {"matchLabels": {"app.kubernetes.io/name": s.name}},
            "template": {
                "metadata": {"labels": pod_labels(s),
                             "annotations": {"kubectl.kubernetes.io/default-container": s.name}},
                "spec": {
                    "serviceAccountName": "arb",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                        "runAsGroup": 10001, "fsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container(s)],
                    "volumes": volumes,
                },
            },
        },
    }


def service(s: Svc) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": s.name, "labels": labels(s.name) | {"arb.io/scrape": "true"}},
        "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": s.name},
                 "ports": [{"name": "http", "port": s.port, "targetPort": "http",
                            "protocol": "TCP"}]},
    }


def service_monitor(s: Svc) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": s.name, "labels": labels(s.name) | PROM_RELEASE},
        "spec": {
            # job label = the Service name (market-data, ...), as the rules and dashboards use
            "selector": {"matchLabels": {"app.kubernetes.io/name": s.name,
                                         "arb.io/scrape": "true"}},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s",
                           "scrapeTimeout": "10s"}],
        },
    }


def pdb(s: Svc) -> dict[str, Any]:
    # One replica each (single owner): a drain may take it, one at a time, and the
    # Deployment brings it back elsewhere; the bus keeps its messages meanwhile.
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": s.name, "labels": labels(s.name)},
        "spec": {"maxUnavailable": 1,
                 "selector": {"matchLabels": {"app.kubernetes.io/name": s.name}}},
    }


def _peer(lbl: dict[str, str]) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": lbl}}


def _port(port: int | str) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def network_policy(s: Svc) -> dict[str, Any]:
    """Who may reach the service, and where it may go (plus DNS from allow-dns)."""
    ingress: list[dict[str, Any]] = [{
        "from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": MONITORING_NS}}}],
        "ports": [_port(s.port)],
    }]
    if s.api:
        ingress.append({"from": [_peer({"arb.io/api-client": "true"})], "ports": [_port(s.port)]})
    egress: list[dict[str, Any]] = [
        {"to": [_peer({"app.kubernetes.io/name": "nats"})], "ports": [_port(4222)]}]
    if s.redis:
        egress.append({"to": [_peer({"app.kubernetes.io/name": "redis"})],
                       "ports": [_port(6379)]})
    if s.database:
        # The ledger is a managed PostgreSQL outside the cluster in prod (in-cluster in
        # staging): any address, port 5432 only.
        egress.append({"ports": [_port(5432)]})
    if s.venues:
        # Venue REST + WebSocket endpoints (TLS) and, in staging, the simulator.
        egress.append({"ports": [_port(443)]})
        egress.append({"to": [_peer({"app.kubernetes.io/name": "venue-sim"})],
                       "ports": [{"protocol": "TCP", "port": 8090, "endPort": 8099}]})
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": s.name, "labels": labels(s.name)},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": s.name}},
                 "policyTypes": ["Ingress", "Egress"], "ingress": ingress, "egress": egress},
    }


def prometheus_rule() -> dict[str, Any]:
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES.glob("*.rules.yaml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": "arb", "labels": PART_OF | PROM_RELEASE,
                     "annotations": {"arb.io/generated-from": "deploy/prometheus/rules"}},
        "spec": {"groups": groups},
    }


HEADER = "# GENERATED by deploy/k8s/generate.py from its SERVICES table: edit that, then run it.\n"


def documents() -> dict[str, list[dict[str, Any]]]:
    return {
        "services.yaml": [d for s in SERVICES for d in (deployment(s), service(s))],
        "servicemonitors.yaml": [service_monitor(s) for s in SERVICES],
        "pdbs.yaml": [pdb(s) for s in SERVICES],
        "networkpolicies.yaml": [network_policy(s) for s in SERVICES],
        "prometheusrule.yaml": [prometheus_rule()],
    }


def dump(docs: list[dict[str, Any]]) -> str:
    body = "---\n".join(yaml.safe_dump(d, sort_keys=False, width=100) for d in docs)
    return HEADER + body


def main(argv: list[str]) -> int:
    check = "--check" in argv
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, docs in documents().items():
        path = OUT / name
        text = dump(docs)
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.relative_to(ROOT).as_posix())
        else:
            path.write_text(text)
    if stale:
        print("out of date (run uv run python deploy/k8s/generate.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
