"""The Grafana dashboards are valid for current Grafana and provisioned the same way in
compose (files) and Kubernetes (sidecar ConfigMaps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import DEPLOY, load_module

DASH_DIR = DEPLOY / "grafana" / "dashboards"
FILES = sorted(DASH_DIR.glob("*.json"))
check_metrics = load_module("deploy/scripts/check_metrics.py")


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_the_five_dashboards_of_the_issue_exist() -> None:
    titles = {_load(p)["title"] for p in FILES}
    assert titles == {"arb / System overview", "arb / Trading", "arb / Market data",
                      "arb / Execution", "arb / Reconciliation"}
    uids = [_load(p)["uid"] for p in FILES]
    assert len(set(uids)) == len(uids) and all(len(u) <= 40 for u in uids)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_dashboard_is_current_grafana_json_with_datasource_by_uid(path: Path) -> None:
    d = _load(path)
    assert d["schemaVersion"] >= 39
    assert path.stem == d["uid"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for panel in d["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip() and target["refId"]
        assert panel["type"] in {"timeseries", "stat", "bargauge", "table"}
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_query_names_arb_metrics_from_the_code(path: Path) -> None:
    """Without a stack: each metric a panel uses is declared in services/ or libs/ (the check
    against a running stack's /metrics is deploy/scripts/observe_dev_stack.py)."""
    declared = _declared_metrics()
    for panel in _load(path)["panels"]:
        for target in panel.get("targets", []):
            use = check_metrics.parse(target["expr"], panel["title"])
            for metric in use.metrics - check_metrics.PROMETHEUS_SERIES:
                base = metric
                for suffix in ("_bucket", "_sum", "_count"):
                    base = base.removesuffix(suffix)
                assert base in declared, f"{panel['title']}: {metric} is not declared in code"


def _declared_metrics() -> set[str]:
    import re

    names: set[str] = set()
    root = DEPLOY.parent
    for src in [*root.glob("services/*/src/**/*.py"), *root.glob("libs/*/src/**/*.py")]:
        names |= set(re.findall(r'(?:Counter|Gauge|Histogram|Summary)\(\s*"(arb_[a-z0-9_]+)"',
                                src.read_text()))
    return names


def test_compose_provisioning_matches_the_dashboards() -> None:
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert [d["uid"] for d in ds["datasources"]] == ["prometheus"]
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/arb.yaml").read_text())
    path = prov["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "compose/docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{path}:ro" in mounts
    env = compose["services"]["grafana"]["environment"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DASH_DIR / Path(home).name).is_file()


def test_kustomize_wraps_every_dashboard_for_the_sidecar() -> None:
    kust = yaml.safe_load((DEPLOY / "grafana/kustomization.yaml").read_text())
    files = sorted(f for g in kust["configMapGenerator"] for f in g["files"])
    assert files == sorted(f"dashboards/{p.name}" for p in FILES)
    assert kust["generatorOptions"]["labels"]["grafana_dashboard"] == "1"
