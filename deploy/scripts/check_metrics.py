"""Every metric a dashboard panel or an alert rule names must be one the services export.

    uv run python deploy/scripts/check_metrics.py URL [URL ...]       # /metrics of a running stack
    uv run python deploy/scripts/check_metrics.py --list               # what the queries use

Reads every PromQL expression of deploy/grafana/dashboards/*.json and
deploy/prometheus/rules/*.rules.yaml, extracts the metric names and the label names used in
selectors and ``by``/``without`` clauses, and compares them with the text exposition of the
given ``/metrics`` URLs: a metric family counts with its histogram series (``_bucket``,
``_sum``, ``_count``) and counter name with or without ``_total``. Prometheus' own series
(``up``, ``ALERTS``) and the rules' recorded series are known too. A label is checked only on
a metric that has samples (a labelled metric without children exports no label names).
Exit 1 on any unknown metric or label, with the list.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules"
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds",
                     "scrape_samples_scraped"}
TARGET_LABELS = {"job", "instance", "le", "quantile", "alertname", "alertstate", "severity",
                 "__name__"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2", "start", "end"}
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")


@dataclass
class Use:
    where: str
    expr: str
    metrics: set[str] = field(default_factory=set)
    selector_labels: dict[str, set[str]] = field(default_factory=dict)  # metric -> labels
    grouping_labels: set[str] = field(default_factory=set)


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)


def parse(expr: str, where: str) -> Use:
    use = Use(where, expr)
    text = _strip_strings(expr)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges / subqueries: [5m], [1d:1m]
    for m in GROUPING.finditer(text):
        use.grouping_labels |= {x.strip() for x in m.group(2).split(",") if x.strip()}
    text = GROUPING.sub(" ", text)
    for m in SELECTOR.finditer(text):
        labels = {lm.group(1) for lm in MATCHER.finditer(m.group(2))}
        name = m.group(1)
        if name and name not in KEYWORDS:
            use.selector_labels.setdefault(name, set()).update(labels)
    text = SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    for m in IDENT.finditer(text):
        token = m.group(0)
        rest = text[m.end():].lstrip()
        if token.lower() in KEYWORDS or rest.startswith("("):
            continue
        if text[max(0, m.start() - 1)] == "$":  # a Grafana variable
            continue
        use.metrics.add(token)
    return use


def dashboard_exprs() -> Iterable[tuple[str, str]]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash.get("panels", []):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield f"{path.name}: {panel['title']}", target["expr"]
        for var in dash.get("templating", {}).get("list", []):
            query = var.get("query")
            if var.get("type") == "query" and isinstance(query, dict):
                m = re.match(r"label_values\((\w+),\s*(\w+)\)", query.get("query", ""))
                if m:
                    selector = f'{m.group(1)}{{{m.group(2)}!=""}}'
                    yield f"{path.name}: variable {var['name']}", selector


def rule_exprs() -> tuple[list[tuple[str, str]], set[str]]:
    exprs, recorded = [], set()
    for path in sorted(RULES.glob("*.rules.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                exprs.append((f"{path.name}: {name}", str(rule["expr"])))
                if "record" in rule:
                    recorded.add(rule["record"])
    return exprs, recorded


@dataclass
class Exported:
    names: set[str] = field(default_factory=set)
    labels: dict[str, set[str]] = field(default_factory=dict)  # series name -> label names

    def add_text(self, text: str) -> None:
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(None, 3)
                self.names.add(name)
                if kind.strip() == "histogram":
                    self.names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                elif kind.strip() == "counter":
                    self.names |= {name, name.removesuffix("_total"), f"{name}_total"
                                   if not name.endswith("_total") else name}
            elif line and not line.startswith("#"):
                m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
                if m:
                    self.names.add(m.group(1))
                    labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
                    self.labels.setdefault(m.group(1), set()).update(labels)

    def labels_of(self, metric: str) -> set[str] | None:
        for candidate in (metric, f"{metric}_total", metric.removesuffix("_total")):
            if candidate in self.labels:
                return self.labels[candidate]
        return None


def uses() -> tuple[list[Use], set[str]]:
    rules, recorded = rule_exprs()
    return [parse(e, w) for w, e in [*dashboard_exprs(), *rules]], recorded


def check(exported: Exported, all_uses: list[Use], recorded: set[str]) -> list[str]:
    known = exported.names | PROMETHEUS_SERIES | recorded
    problems = []
    for use in all_uses:
        for metric in sorted(use.metrics - known):
            problems.append(f"{use.where}: metric {metric} is not exported  [{use.expr}]")
        for metric, labels in use.selector_labels.items():
            have = exported.labels_of(metric)
            if have is None:
                continue
            for label in sorted(labels - have - TARGET_LABELS):
                problems.append(f"{use.where}: {metric} has no label {label!r} "
                                f"(has {sorted(have)})")
        if use.grouping_labels:
            have_any: set[str] = set()
            known_labels = False
            for metric in use.metrics:
                labels = exported.labels_of(metric)
                if labels is not None:
                    have_any |= labels
                    known_labels = True
            if known_labels:
                for label in sorted(use.grouping_labels - have_any - TARGET_LABELS):
                    problems.append(f"{use.where}: no metric of the query has label {label!r}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description="dashboard and rule metrics vs. /metrics")
    ap.add_argument("urls", nargs="*", help="/metrics URLs of a running stack")
    ap.add_argument("--list", action="store_true", help="print the metrics the queries use")
    args = ap.parse_args()
    all_uses, recorded = uses()
    used = sorted({m for u in all_uses for m in u.metrics} - recorded)
    if args.list or not args.urls:
        print("\n".join(used))
        return 0
    exported = Exported()
    for url in args.urls:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - our own stack
            exported.add_text(resp.read().decode())
    problems = check(exported, all_uses, recorded)
    n_dash = sum(1 for u in all_uses if ".json:" in u.where)
    print(f"{len(all_uses)} queries ({n_dash} dashboard, {len(all_uses) - n_dash} rule) use "
          f"{len(used)} metrics; {len(exported.names)} series names exported by "
          f"{len(args.urls)} endpoints")
    for p in problems:
        print("  " + p)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
