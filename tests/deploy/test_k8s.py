"""The rendered kustomize overlays: probes, locked-down pods, selectors that select, the
network flows of the architecture (and no others), secrets and monitoring wiring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .conftest import DEPLOY, load_module

k8s = load_module("deploy/k8s/generate.py")
Doc = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    """(workload, pod template) for every workload."""
    return [(d, d["spec"]["template"]) for d in docs if d["kind"] in WORKLOADS]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_service_has_its_deployment_with_probes_and_limits(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    for svc in k8s.SERVICES:
        c = deployments[svc.name]["spec"]["template"]["spec"]["containers"][0]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["ports"][0]["containerPort"] == svc.port
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
        assert {"cpu", "memory"} <= set(c["resources"]["limits"])


def test_every_pod_is_non_root_read_only_unprivileged(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    for workload, template in pod_specs(docs):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec.get("automountServiceAccountToken") is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "limits" in c["resources"]


def test_services_select_pods_and_their_named_ports_exist(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    templates = [t for _, t in pod_specs(docs)]
    for svc in of_kind(docs, "Service"):
        selected = [t for t in templates
                    if matches(svc["spec"]["selector"], t["metadata"]["labels"])]
        assert selected, f"Service {svc['metadata']['name']} selects no pod"
        names = {p["name"] for t in selected for c in t["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, (svc["metadata"]["name"], port)


def test_service_monitors_scrape_every_service_by_port_name(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    services = of_kind(docs, "Service")
    monitors = of_kind(docs, "ServiceMonitor")
    expected = {s.name for s in k8s.SERVICES} | ({"venue-sim"} if name == "staging" else set())
    assert {m["metadata"]["name"] for m in monitors} == expected
    for m in monitors:
        chosen = [s for s in services
                  if matches(m["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert len(chosen) == 1, m["metadata"]["name"]
        # job label = Service name: what the rules and dashboards select on
        assert chosen[0]["metadata"]["name"] == m["metadata"]["name"]
        ports = {p["name"] for p in chosen[0]["spec"]["ports"]}
        for ep in m["spec"]["endpoints"]:
            assert ep["port"] in ports and ep["path"] == "/metrics"
        assert m["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_is_the_rule_files(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    (rule,) = of_kind(docs, "PrometheusRule")
    groups = []
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.rules.yaml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    assert rule["spec"]["groups"] == groups
    alerts = [r["alert"] for g in groups for r in g["rules"] if "alert" in r]
    for required in ("ServiceDown", "ServiceNotReady", "FeedStale", "FeedLagHigh",
                     "DrawdownHigh", "DailyLossLimitNear", "UnhedgedExposure",
                     "ReconciliationDiscrepancy", "OrderRejectRateHigh", "ConsumerLagHigh",
                     "DLQGrowing"):
        assert required in alerts


def test_dashboards_are_configmaps_for_the_grafana_sidecar(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    maps = [d for d in of_kind(docs, "ConfigMap")
            if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    files = {p.name: json.loads(p.read_text())
             for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")}
    got = {k: json.loads(v) for m in maps for k, v in m["data"].items()}
    assert got == files


def test_pdbs_cover_every_workload(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for workload, template in pod_specs(docs):
        if workload["kind"] == "Job":
            continue
        labels = template["metadata"]["labels"]
        if labels.get("app.kubernetes.io/name") in ("redis", "postgres"):
            continue  # single replica, data re-synced / on a volume
        assert any(matches(p["spec"]["selector"]["matchLabels"], labels) for p in pdbs), \
            workload["metadata"]["name"]


def test_secret_references_are_documented_in_the_example(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    example = [d for d in yaml.safe_load_all(
        (DEPLOY / "k8s" / "overlays" / name / "secrets.example.yaml").read_text()) if d]
    keys = {(d["metadata"]["name"], k) for d in example for k in d["stringData"]}
    secret_names = {d["metadata"]["name"] for d in example}
    assert not of_kind(docs, "Secret"), "no real Secret may be part of the kustomization"
    for workload, template in pod_specs(docs):
        for c in template["spec"]["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert (ref["name"], ref["key"]) in keys, (workload["metadata"]["name"], ref)
        for vol in template["spec"].get("volumes", []):
            if "secret" in vol:
                assert vol["secret"]["secretName"] in secret_names


def test_config_maps_referenced_exist(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    names = {d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")}
    for _, template in pod_specs(docs):
        for c in template["spec"]["containers"]:
            for src in c.get("envFrom", []):
                assert src["configMapRef"]["name"] in names
        for vol in template["spec"].get("volumes", []):
            if "configMap" in vol:
                assert vol["configMap"]["name"] in names


def test_nats_is_one_server_in_staging_and_a_cluster_of_three_in_prod(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    (sts,) = [d for d in of_kind(docs, "StatefulSet") if d["metadata"]["name"] == "nats"]
    conf = next(d for d in of_kind(docs, "ConfigMap")
                if d["metadata"]["name"].startswith("nats-config"))["data"]["nats.conf"]
    assert "jetstream" in conf
    assert sts["spec"]["volumeClaimTemplates"]
    cfg = next(d for d in of_kind(docs, "ConfigMap")
               if d["metadata"]["name"].startswith("arb-config"))["data"]
    # The services provision every stream with as many replicas as there are NATS servers.
    assert cfg["ARB_STREAM_REPLICAS"] == str(sts["spec"]["replicas"])
    if name == "prod":
        assert sts["spec"]["replicas"] == 3
        assert conf.count("nats-headless:6222") == 3
    else:
        assert sts["spec"]["replicas"] == 1 and "cluster {" not in conf


def test_profile_mode_and_images_per_overlay(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    cfg = next(d for d in of_kind(docs, "ConfigMap")
               if d["metadata"]["name"].startswith("arb-config"))["data"]
    assert cfg["ARB_PROFILE"] == name
    assert cfg["ARB_MODE"] == ("live" if name == "staging" else "paper")
    assert all(d["metadata"].get("namespace") == f"arb-{name}" for d in docs
               if d["kind"] != "Namespace")
    if name == "prod":
        for _, template in pod_specs(docs):
            image = template["spec"]["containers"][0]["image"]
            if image.startswith("arb/") or "/arb/" in image:
                assert image.startswith("registry.example.com/arb/"), image


# ------------------------------------------------------------------ network policies
def _allowed(policies: list[Doc], pod: dict[str, str], direction: str,
             peer: dict[str, str], peer_ns: str, port: int) -> bool:
    """Is traffic in ``direction`` (ingress/egress) of ``pod`` to/from ``peer`` allowed?"""
    applying = [p for p in policies
                if matches(p["spec"]["podSelector"].get("matchLabels", {}), pod)
                and direction.capitalize() in p["spec"]["policyTypes"]]
    if not applying:
        return True
    key, side = ("ingress", "from") if direction == "ingress" else ("egress", "to")
    for p in applying:
        for rule in p["spec"].get(key, []):
            ports = rule.get("ports")
            if ports and not any(pr["port"] == port or
                                 (isinstance(pr["port"], int) and
                                  pr["port"] <= port <= pr.get("endPort", pr["port"]))
                                 for pr in ports):
                continue
            peers = rule.get(side)
            if not peers:
                return True
            for pe in peers:
                if "podSelector" in pe and peer_ns == "self" and \
                        matches(pe["podSelector"].get("matchLabels", {}), peer):
                    return True
                ns = pe.get("namespaceSelector", {}).get("matchLabels", {})
                if ns and ns.get("kubernetes.io/metadata.name") == peer_ns:
                    return True
                if "ipBlock" in pe and peer_ns == "external":
                    return True
    return False


def _flow(docs: list[Doc], src: str, dst: str, port: int) -> bool:
    policies = of_kind(docs, "NetworkPolicy")
    pods = {t["metadata"]["labels"]["app.kubernetes.io/name"]: t["metadata"]["labels"]
            for _, t in pod_specs(docs)}
    if src == "monitoring":
        return _allowed(policies, pods[dst], "ingress", {}, "monitoring", port)
    if dst == "external":
        return _allowed(policies, pods[src], "egress", {}, "external", port)
    return (_allowed(policies, pods[src], "egress", pods[dst], "self", port) and
            _allowed(policies, pods[dst], "ingress", pods[src], "self", port))


def test_network_policies_allow_the_flows_of_the_architecture(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    for svc in k8s.SERVICES:
        assert _flow(docs, svc.name, "nats", 4222), f"{svc.name} -> nats"
        assert _flow(docs, "monitoring", svc.name, svc.port), f"prometheus -> {svc.name}"
    for src in ("strategy", "state"):
        assert _flow(docs, src, "redis", 6379)
    for src in ("market-data", "executor", "reconciler"):
        assert _flow(docs, src, "external", 443), f"{src} -> venues"
    for src in ("state", "reconciler", "arb-migrate"):
        assert _flow(docs, src, "external", 5432)
    assert _flow(docs, "nats", "nats", 6222)
    if name == "staging":
        for src in ("state", "reconciler", "arb-migrate"):
            assert _flow(docs, src, "postgres", 5432)
        for src in ("market-data", "executor", "reconciler"):
            assert _flow(docs, src, "venue-sim", 8091) and _flow(docs, src, "venue-sim", 8090)


def test_network_policies_refuse_flows_the_architecture_does_not_have(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    assert not _flow(docs, "market-data", "redis", 6379)
    assert not _flow(docs, "executor", "redis", 6379)
    assert not _flow(docs, "market-data", "external", 5432)
    assert not _flow(docs, "strategy", "external", 443)
    assert not _flow(docs, "strategy", "state", 8084)
    assert not _flow(docs, "redis", "nats", 4222)
    assert not _flow(docs, "arb-migrate", "nats", 4222)
    if name == "staging":
        assert not _flow(docs, "strategy", "postgres", 5432)
        assert not _flow(docs, "strategy", "venue-sim", 8091)


def test_example_secrets_are_marked_and_not_included() -> None:
    for name in ("staging", "prod"):
        path = DEPLOY / "k8s" / "overlays" / name / "secrets.example.yaml"
        text = path.read_text()
        assert text.startswith("# EXAMPLE ONLY")
        kust = yaml.safe_load((path.parent / "kustomization.yaml").read_text())
        assert "secrets.example.yaml" not in kust["resources"]
        for doc in yaml.safe_load_all(text):
            if doc:
                assert all(v.count("CHANGE-ME") for v in doc["stringData"].values())


def test_readme_names_the_apply_command() -> None:
    readme = (Path(DEPLOY.parent) / "README.md").read_text()
    assert "kubectl apply -k deploy/k8s/overlays/prod" in readme
