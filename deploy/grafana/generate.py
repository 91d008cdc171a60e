"""The Grafana dashboards, as code. Writes ``deploy/grafana/dashboards/*.json``.

    python3 deploy/grafana/generate.py          # rewrite the JSON
    python3 deploy/grafana/generate.py --check  # exit 1 if a committed dashboard differs

Each dashboard is a list of rows of panels; a panel is one or more PromQL queries. Every
query selects metrics the services export (``tests/deploy`` and ``deploy/scripts/
check_metrics.py`` check that against a running stack). Panels reference the Prometheus data
source through the ``datasource`` variable (uid ``prometheus`` by default: the uid of the
provisioned data source in deploy/compose and of kube-prometheus-stack's default one).

To add a panel: add a ``Panel(...)`` to a row below, run this script, commit both.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39  # Grafana 11
DS = {"type": "prometheus", "uid": "${datasource}"}
SERVICES = "market-data|strategy|executor|state|reconciler"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # timeseries | stat | bargauge | table
    unit: str = "short"
    description: str = ""
    width: int = 8
    height: int = 8
    thresholds: tuple[tuple[float | None, str], ...] = ()
    mappings: tuple[tuple[str, str, str], ...] = ()  # value, text, color
    decimals: int | None = None
    stack: bool = False
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = ("arb",)
    variables: tuple[dict[str, Any], ...] = ()
    refresh: str = "10s"
    time_from: str = "now-1h"
    links: list[dict[str, Any]] = field(default_factory=list)


def q(expr: str, legend: str = "", instant: bool = False) -> Query:
    return Query(" ".join(expr.split()), legend, instant)


UP_DOWN = (("0", "DOWN", "red"), ("1", "UP", "green"))
READY = (("0", "NOT READY", "red"), ("1", "READY", "green"))
OPEN = (("0", "CLOSED", "red"), ("1", "OPEN", "green"))


def query_variable(name: str, label: str, metric: str, lab: str) -> dict[str, Any]:
    query = f"label_values({metric}, {lab})"
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2, "sort": 1, "hide": 0, "options": [], "regex": "",
    }


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource", "label": "Data source", "type": "datasource",
        "query": "prometheus", "hide": 0, "refresh": 1, "regex": "", "options": [],
        "current": {"selected": False, "text": "Prometheus", "value": "prometheus"},
    }


def _field_config(p: Panel) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if p.thresholds:
        steps = [{"color": color, "value": value} for value, color in p.thresholds]
    defaults: dict[str, Any] = {
        "unit": p.unit,
        "thresholds": {"mode": "absolute", "steps": steps},
        "color": {"mode": "thresholds" if p.kind in ("stat", "bargauge") else "palette-classic"},
        "mappings": [],
    }
    if p.mappings:
        defaults["mappings"] = [{
            "type": "value",
            "options": {value: {"text": text, "color": color, "index": i}
                        for i, (value, text, color) in enumerate(p.mappings)},
        }]
    if p.decimals is not None:
        defaults["decimals"] = p.decimals
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    if p.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if p.stack else 0,
            "showPoints": "never", "spanNulls": False,
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if p.thresholds else "off"},
        }
    return {"defaults": defaults, "overrides": []}


def _options(p: Panel) -> dict[str, Any]:
    if p.kind == "timeseries":
        return {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"}}
    if p.kind == "stat":
        return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background", "graphMode": "none", "justifyMode": "auto",
                "orientation": "auto", "textMode": "value_and_name", "wideLayout": True,
                "showPercentChange": False}
    if p.kind == "bargauge":
        return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True,
                "valueMode": "color", "namePlacement": "auto", "sizing": "auto",
                "minVizHeight": 16, "minVizWidth": 8, "maxVizHeight": 300}
    return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}


def _targets(p: Panel) -> list[dict[str, Any]]:
    out = []
    for i, query in enumerate(p.queries):
        target: dict[str, Any] = {
            "refId": chr(ord("A") + i), "datasource": DS, "expr": query.expr,
            "legendFormat": query.legend or "__auto", "range": not query.instant,
            "instant": query.instant, "editorMode": "code",
        }
        if p.kind == "table":
            target["format"] = "table"
        out.append(target)
    return out


def render(d: Dashboard) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row in d.rows:
        panels.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        x = 0
        row_height = 0
        for p in row.panels:
            if x + p.width > 24:
                x, y = 0, y + row_height
                row_height = 0
            panel: dict[str, Any] = {
                "id": next_id, "type": p.kind, "title": p.title, "description": p.description,
                "datasource": DS, "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
                "targets": _targets(p), "fieldConfig": _field_config(p), "options": _options(p),
            }
            if p.kind == "table":
                panel["transformations"] = [{"id": "merge", "options": {}}]
            panels.append(panel)
            next_id += 1
            x += p.width
            row_height = max(row_height, p.height)
        y += row_height
    return {
        "uid": d.uid, "title": d.title, "description": d.description, "tags": list(d.tags),
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": False,
        "graphTooltip": 1, "timezone": "utc", "refresh": d.refresh,
        "time": {"from": d.time_from, "to": "now"}, "timepicker": {},
        "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "links": [{"title": "arb dashboards", "type": "dashboards", "tags": ["arb"],
                   "asDropdown": True, "includeVars": False, "keepTime": True,
                   "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}],
        "templating": {"list": [datasource_variable(), *d.variables]},
        "panels": panels,
    }


# ------------------------------------------------------------------------------ dashboards
def overview() -> Dashboard:
    svc = f'job=~"{SERVICES}|venue-sim"'
    return Dashboard(
        "arb-overview", "arb / System overview",
        "Service health, restarts, NATS JetStream consumers and dead letters.",
        rows=(
            Row("Services", (
                Panel("Up", (q(f"up{{{svc}}}", "{{job}}"),), kind="stat", mappings=UP_DOWN,
                      thresholds=((None, "red"), (1, "green")), width=12, height=5,
                      description="Prometheus can scrape the service's /metrics."),
                Panel("Ready", (q(f"arb_service_ready{{{svc}}}", "{{job}}"),), kind="stat",
                      mappings=READY, thresholds=((None, "red"), (1, "green")), width=12,
                      height=5, description="/readyz answers 200 (dependencies connected, "
                                            "gate open for trading services)."),
                Panel("Restarts (1 h)",
                      (q(f"changes(arb_service_start_time_seconds{{{svc}}}[1h])", "{{job}}"),),
                      kind="bargauge", thresholds=((None, "green"), (1, "orange"), (3, "red")),
                      decimals=0),
                Panel("Uptime", (q(f"time() - arb_service_start_time_seconds{{{svc}}}",
                                   "{{job}}"),), kind="bargauge", unit="s"),
                Panel("Firing alerts", (q('ALERTS{alertstate="firing"}',
                                          "{{alertname}} {{job}} {{venue}} {{symbol}}"),),
                      kind="table"),
            )),
            Row("NATS JetStream", (
                Panel("Consumer lag (pending messages)",
                      (q("arb_bus_consumer_pending", "{{job}} {{stream}}/{{consumer}}"),),
                      thresholds=((None, "green"), (1000, "red")), width=12),
                Panel("Consumed / s",
                      (q("sum by (job, stream, consumer) (rate(arb_bus_consumed_total[1m]))",
                         "{{job}} {{stream}}/{{consumer}}"),), unit="ops", width=12),
                Panel("Published / s", (q("sum by (job, kind) (rate(arb_bus_published_total[1m]))",
                                          "{{job}} {{kind}}"),), unit="ops"),
                Panel("Dead letters (5 m)",
                      (q("sum by (job, stream, reason) (increase(arb_bus_dlq_total[5m]))",
                         "{{job}} dlq.{{stream}} {{reason}}"),), decimals=0,
                      thresholds=((None, "green"), (1, "red"))),
                Panel("Handler errors / duplicates (5 m)", (
                    q("sum by (job, stream, consumer) (increase(arb_bus_handler_errors_total[5m]))",
                      "errors {{job}} {{stream}}/{{consumer}}"),
                    q("sum by (job, kind) (increase(arb_bus_publish_duplicates_total[5m]))",
                      "duplicates {{job}} {{kind}}"),
                ), decimals=0),
                Panel("NATS connected", (q("arb_bus_connected", "{{job}}"),), kind="stat",
                      mappings=UP_DOWN, thresholds=((None, "red"), (1, "green")), width=12,
                      height=5),
                Panel("NATS reconnects (1 h)",
                      (q("increase(arb_bus_reconnects_total[1h])", "{{job}}"),), kind="bargauge",
                      decimals=0, width=12, height=5),
            )),
            Row("Ledger and hot state", (
                Panel("Events written / s",
                      (q("sum by (kind) (rate(arb_state_events_ingested_total[1m]))", "{{kind}}"),),
                      unit="ops"),
                Panel("Ledger batch p99",
                      (q("histogram_quantile(0.99, sum by (le) "
                         "(rate(arb_state_ingest_batch_seconds_bucket[5m])))", "p99"),
                       q("histogram_quantile(0.5, sum by (le) "
                         "(rate(arb_state_ingest_batch_seconds_bucket[5m])))", "p50")), unit="s"),
                Panel("Errors (5 m)", (
                    q("increase(arb_state_db_errors_total[5m])", "ledger (state)"),
                    q("increase(arb_state_redis_errors_total[5m])", "redis (state)"),
                    q("increase(arb_strategy_redis_errors_total[5m])", "redis (strategy)"),
                    q("increase(arb_state_events_rejected_total[5m])", "events refused (state)"),
                    q("sum by (task) (increase(arb_state_analytics_errors_total[5m]))",
                      "analytics {{task}} (state)"),
                ), decimals=0),
                Panel("Snapshots (1 h)", (
                    q("sum by (result) (increase(arb_state_snapshot_saves_total[1h]))",
                      "saves {{result}}"),
                    q("sum by (result) (increase(arb_state_snapshot_loads_total[1h]))",
                      "loads {{result}}"),
                    q("sum by (reason) (increase(arb_state_snapshots_invalid_total[1h]))",
                      "invalid {{reason}}"),
                ), decimals=0, width=12),
                Panel("Strategy restore", (
                    q("arb_strategy_restored", "restored"),
                    q("arb_strategy_exec_seq", "EXEC seq applied"),
                ), width=12),
                Panel("GC pauses p99 (startup objects frozen)",
                      (q("histogram_quantile(0.99, sum by (job, generation, le) "
                         "(rate(arb_gc_pause_seconds_bucket[5m])))",
                         "{{job}} gen {{generation}}"),),
                      unit="s", width=12,
                      description="Garbage-collector pauses per service and generation "
                                  "(arb_gc_pause_seconds); they stall that service's loop."),
                Panel("Bad books (5 m)", (
                    q('increase(arb_strategy_bad_messages_total{kind="bad_book"}[5m])',
                      "strategy"),
                    q("increase(arb_executor_bad_books_total[5m])", "executor"),
                ), decimals=0, width=12,
                      description="Books whose levels did not decode when used (dropped)."),
            )),
        ),
    )


def trading() -> Dashboard:
    sym = 'symbol=~"$symbol"'
    return Dashboard(
        "arb-trading", "arb / Trading",
        "Per-symbol PnL, trades, exposure and risk usage; portfolio PnL and drawdown.",
        variables=(query_variable("symbol", "Symbol", "arb_strategy_exposure", "symbol"),),
        rows=(
            Row("Portfolio", (
                Panel("Realized PnL (ledger)", (q("sum(arb_state_realized_pnl)", "portfolio"),),
                      kind="stat", unit="none", decimals=2, width=6, height=5,
                      thresholds=((None, "red"), (0, "green"))),
                Panel("Daily PnL (UTC day)", (q("arb_strategy_daily_pnl", "daily"),),
                      kind="stat", unit="none", decimals=2, width=6, height=5,
                      thresholds=((None, "red"), (0, "green"))),
                Panel("Daily loss limit used",
                      (q("arb_strategy_daily_loss / arb_strategy_daily_loss_limit", "used"),),
                      kind="stat", unit="percentunit", width=6, height=5,
                      thresholds=((None, "green"), (0.5, "orange"), (0.8, "red")),
                      description="Realized loss of the UTC day over the RiskGuard's limit "
                                  "(ARB_DAILY_LOSS_LIMIT, arb_strategy_daily_loss_limit); at "
                                  "100% no new entry opens until the next UTC day."),
                Panel("Trading", (q("arb_strategy_trading_enabled", "new entries"),),
                      kind="stat", width=6, height=5,
                      mappings=(("0", "OFF", "orange"), ("1", "ON", "green")),
                      thresholds=((None, "orange"), (1, "green"))),
                Panel("Equity (realized + unrealized, ledger)", (
                    q("sum(arb_state_equity)", "equity"),
                    q("sum(arb_state_realized_pnl)", "realized"),
                    q("sum(arb_state_unrealized_pnl)", "unrealized"),
                ), unit="none", width=12,
                      description="PnL of this mode and session: realized from the ledger's "
                                  "positions, unrealized = open positions at the book mid (else "
                                  "the last fill price); written with each equity_history row."),
                Panel("Equity drawdown from the 24 h high",
                      (q("max_over_time(sum(arb_state_equity)[1d:1m]) - sum(arb_state_equity)",
                         "drawdown"),), unit="none", width=12,
                      thresholds=((None, "green"), (50, "red")),
                      description="DrawdownHigh fires above 50 (quote)."),
            )),
            Row("Per symbol", (
                Panel("Realized PnL", (q(f"arb_strategy_realized_pnl{{{sym}}}", "{{symbol}}"),),
                      unit="none"),
                Panel("Round trips (1 h)",
                      (q(f"increase(arb_strategy_trades_completed_total{{{sym}}}[1h])",
                         "{{symbol}}"),), kind="bargauge", decimals=0),
                Panel("Winrate (24 h)",
                      (q(f"sum by (symbol) (increase(arb_strategy_trades_won_total{{{sym}}}[1d]))"
                         f" / sum by (symbol) (increase(arb_strategy_trades_completed_total"
                         f"{{{sym}}}[1d]))", "{{symbol}}"),),
                      kind="bargauge", unit="percentunit", min=0, max=1,
                      thresholds=((None, "red"), (0.4, "orange"), (0.5, "green")),
                      description="Round trips closed with PnL > 0 over round trips closed."),
                Panel("PnL per round trip",
                      (q(f"arb_strategy_realized_pnl{{{sym}}} / "
                         f"arb_strategy_trades_completed_total{{{sym}}}", "{{symbol}}"),),
                      kind="bargauge", unit="none", decimals=4,
                      description="Average realized PnL per completed round trip (since the "
                                  "strategy started)."),
                Panel("Unrealized PnL (ledger)",
                      (q(f"arb_state_unrealized_pnl{{{sym}}}", "{{symbol}}"),), unit="none",
                      description="Open positions at their marks (book mid, else last fill)."),
                Panel("Exposure", (q(f"arb_strategy_exposure{{{sym}}}", "{{symbol}}"),),
                      unit="none"),
                Panel("Exposure cap used",
                      (q(f"abs(arb_strategy_exposure{{{sym}}}) / "
                         f"arb_strategy_exposure_limit{{{sym}}}", "{{symbol}}"),),
                      kind="bargauge", unit="percentunit", min=0, max=1,
                      thresholds=((None, "green"), (0.7, "orange"), (0.9, "red")),
                      description="Over the symbol's cap (ARB_MAX_EXPOSURE, else "
                                  "ARB_MAX_EXPOSURE_DEFAULT: arb_strategy_exposure_limit)."),
                Panel("Risk blocks (5 m)",
                      (q(f"sum by (symbol, kind) "
                         f"(increase(arb_strategy_risk_blocks_total{{{sym}}}[5m]))",
                         "{{symbol}} {{kind}}"),), decimals=0),
                Panel("Positions (ledger)", (q(f"arb_state_positions{{{sym}}}",
                                               "{{venue}} {{symbol}}"),), unit="none"),
                Panel("Best executable spread",
                      (q(f"arb_strategy_spread_bps{{{sym}}}", "{{symbol}}"),), unit="none",
                      description="Net of fees, slippage buffer and FX, in bps."),
                Panel("Intents / min",
                      (q(f"sum by (symbol, action) "
                         f"(rate(arb_strategy_intents_total{{{sym}}}[5m])) * 60",
                         "{{symbol}} {{action}}"),), unit="none"),
            )),
            Row("Decisions", (
                Panel("Book -> intent latency", (
                    q("histogram_quantile(0.5, sum by (le) "
                      "(rate(arb_strategy_decision_seconds_bucket[5m])))", "p50"),
                    q("histogram_quantile(0.99, sum by (le) "
                      "(rate(arb_strategy_decision_seconds_bucket[5m])))", "p99"),
                ), unit="s", width=12),
                Panel("Bad messages / publish errors (5 m)", (
                    q("sum by (kind) (increase(arb_strategy_bad_messages_total[5m]))",
                      "bad {{kind}}"),
                    q("sum by (symbol) (increase(arb_strategy_publish_errors_total[5m]))",
                      "publish errors {{symbol}}"),
                ), decimals=0, width=12),
            )),
        ),
    )


def market_data() -> Dashboard:
    ven = 'venue=~"$venue"'
    return Dashboard(
        "arb-market-data", "arb / Market data",
        "Venue feeds: messages, lag, staleness, reconnects, sequence gaps.",
        variables=(query_variable("venue", "Venue", "arb_market_data_connected", "venue"),),
        rows=(
            Row("Feeds", (
                Panel("Connected", (q(f"arb_market_data_connected{{{ven}}}", "{{venue}}"),),
                      kind="stat", mappings=UP_DOWN, thresholds=((None, "red"), (1, "green")),
                      width=8, height=5),
                Panel("Stale books", (q(f"count(arb_market_data_book_age_seconds{{{ven}}} > 10)"
                                        " or vector(0)", "stale"),),
                      kind="stat", decimals=0, width=8, height=5,
                      thresholds=((None, "green"), (1, "red")),
                      description="Books without an update for more than 10 s (FeedStale)."),
                Panel("Frames / s (all)",
                      (q(f"sum(rate(arb_market_data_frames_total{{{ven}}}[1m]))", "frames"),),
                      kind="stat", unit="ops", width=8, height=5),
                Panel("WebSocket frames / s", (q(f"sum by (venue) "
                                                 f"(rate(arb_market_data_frames_total{{{ven}}}[1m]))",
                                                 "{{venue}}"),), unit="ops"),
                Panel("Books published / s", (q(f"sum by (venue, symbol) "
                                                f"(rate(arb_market_data_books_published_total"
                                                f"{{{ven}}}[1m]))", "{{venue}} {{symbol}}"),),
                      unit="ops"),
                Panel("Feed lag (receive - venue event time)", (
                    q(f"histogram_quantile(0.5, sum by (venue, le) "
                      f"(rate(arb_market_data_feed_lag_seconds_bucket{{{ven}}}[5m])))",
                      "p50 {{venue}}"),
                    q(f"histogram_quantile(0.99, sum by (venue, le) "
                      f"(rate(arb_market_data_feed_lag_seconds_bucket{{{ven}}}[5m])))",
                      "p99 {{venue}}"),
                ), unit="s", thresholds=((None, "green"), (0.5, "red"))),
                Panel("Book age", (q(f"arb_market_data_book_age_seconds{{{ven}}}",
                                     "{{venue}} {{symbol}}"),), unit="s", width=12,
                      thresholds=((None, "green"), (10, "red"))),
                Panel("Reconnects / gaps / snapshots / bad frames (5 m)", (
                    q(f"sum by (venue) (increase(arb_market_data_reconnects_total{{{ven}}}[5m]))",
                      "reconnects {{venue}}"),
                    q(f"sum by (venue) (increase(arb_market_data_gaps_total{{{ven}}}[5m]))",
                      "gaps {{venue}}"),
                    q(f"sum by (venue) (increase(arb_market_data_snapshots_total{{{ven}}}[5m]))",
                      "snapshots {{venue}}"),
                    q(f"sum by (venue) (increase(arb_market_data_bad_frames_total{{{ven}}}[5m]))",
                      "bad frames {{venue}}"),
                ), decimals=0, width=12),
            )),
            Row("Simulator (dev / staging)", (
                Panel("Simulator frames sent / s",
                      (q(f"sum by (venue) (rate(arb_venue_sim_ws_frames_sent_total{{{ven}}}[1m]))",
                         "{{venue}}"),), unit="ops"),
                Panel("Simulator WebSocket connections",
                      (q(f"arb_venue_sim_ws_connections{{{ven}}}", "{{venue}}"),), decimals=0),
                Panel("Injected faults", (q(f"arb_venue_sim_faults_active{{{ven}}} > 0",
                                            "{{venue}} {{kind}}"),), decimals=0),
            )),
        ),
    )


def execution() -> Dashboard:
    ven = 'venue=~"$venue"'
    return Dashboard(
        "arb-execution", "arb / Execution",
        "Intent -> ack latency, orders, fills, rejects, slippage, unhedged exposure.",
        variables=(query_variable("venue", "Venue", "arb_executor_gate_open", "venue"),),
        rows=(
            Row("Latency", (
                Panel("Intent -> all legs durable", (
                    q("histogram_quantile(0.5, sum by (le) "
                      "(rate(arb_executor_intent_to_ack_seconds_bucket[5m])))", "p50"),
                    q("histogram_quantile(0.9, sum by (le) "
                      "(rate(arb_executor_intent_to_ack_seconds_bucket[5m])))", "p90"),
                    q("histogram_quantile(0.99, sum by (le) "
                      "(rate(arb_executor_intent_to_ack_seconds_bucket[5m])))", "p99"),
                ), unit="s"),
                Panel("Order ack latency by venue", (
                    q(f"histogram_quantile(0.5, sum by (venue, le) "
                      f"(rate(arb_executor_order_ack_seconds_bucket{{{ven}}}[5m])))",
                      "p50 {{venue}}"),
                    q(f"histogram_quantile(0.99, sum by (venue, le) "
                      f"(rate(arb_executor_order_ack_seconds_bucket{{{ven}}}[5m])))",
                      "p99 {{venue}}"),
                ), unit="s",
                      description="Order request sent to the venue's answer (the order, or a "
                                  "refusal); timeouts and lost answers are unknown outcomes."),
                Panel("Intent -> ack latency distribution",
                      (q("sum by (le) (increase(arb_executor_intent_to_ack_seconds_bucket[5m]))",
                         "{{le}}"),), kind="bargauge", decimals=0,
                      description="Intents per latency bucket (cumulative, le = upper bound)."),
            )),
            Row("Orders and fills", (
                Panel("Order events / min by status",
                      (q(f"sum by (venue, status) (rate(arb_executor_orders_total{{{ven}}}[5m])) "
                         f"* 60", "{{venue}} {{status}}"),), unit="none", stack=True),
                Panel("Fill ratio (filled / new orders, 15 m)",
                      (q(f'sum by (venue) (increase(arb_executor_orders_total{{{ven}, '
                         f'status="FILLED"}}[15m])) / sum by (venue) (increase('
                         f'arb_executor_orders_total{{{ven}, status="NEW"}}[15m]))',
                         "{{venue}}"),), kind="bargauge", unit="percentunit", min=0, max=1,
                      thresholds=((None, "red"), (0.8, "orange"), (0.95, "green"))),
                Panel("Fills / min", (q(f"sum by (venue) (rate(arb_executor_fills_total{{{ven}}}"
                                        f"[5m])) * 60", "{{venue}}"),), unit="none"),
                Panel("Rejects by reason (15 m)",
                      (q(f"sum by (venue, reason) "
                         f"(increase(arb_executor_rejects_total{{{ven}}}[15m]))",
                         "{{venue}} {{reason}}"),), kind="bargauge", decimals=0),
                Panel("Rate limited by the venue (15 m)",
                      (q(f"sum by (venue) (increase(arb_executor_rate_limited_total{{{ven}}}"
                         f"[15m]))", "{{venue}}"),), kind="bargauge", decimals=0),
                Panel("Unknown outcomes (15 m)",
                      (q(f"sum by (venue) (increase(arb_executor_unknown_orders_total{{{ven}}}"
                         f"[15m]))", "{{venue}}"),), kind="bargauge", decimals=0),
                Panel("Invariant violations (1 h)",
                      (q("sum by (kind) (increase(arb_executor_invariant_violations_total[1h]))",
                         "{{kind}}"),), kind="bargauge", decimals=0,
                      thresholds=((None, "green"), (1, "red"))),
            )),
            Row("Hedging", (
                Panel("Uneven legs / hedge results (1 h)", (
                    q("sum by (symbol) (increase(arb_executor_leg_mismatch_total[1h]))",
                      "uneven {{symbol}}"),
                    q("sum by (symbol, result) (increase(arb_executor_hedge_results_total[1h]))",
                      "{{result}} {{symbol}}"),
                ), kind="bargauge", decimals=0,
                      description="Intents whose legs filled different quantities, and how "
                                  "hedging ended (hedged, dust, residual, unknown)."),
                Panel("Hedge orders (1 h)",
                      (q("sum by (venue, outcome) (increase(arb_executor_hedge_orders_total[1h]))",
                         "{{venue}} {{outcome}}"),), kind="bargauge", decimals=0),
                Panel("Uneven -> even again", (
                    q("histogram_quantile(0.5, sum by (le) "
                      "(rate(arb_executor_hedge_seconds_bucket[15m])))", "p50"),
                    q("histogram_quantile(0.99, sum by (le) "
                      "(rate(arb_executor_hedge_seconds_bucket[15m])))", "p99"),
                ), unit="s"),
                Panel("Symbols blocked by unhedged exposure",
                      (q("arb_strategy_symbol_blocked", "{{symbol}}"),), kind="stat",
                      mappings=(("0", "OK", "green"), ("1", "BLOCKED", "red")),
                      thresholds=((None, "green"), (1, "red")), width=12, height=5),
                Panel("Free balances (executor's last view)",
                      (q(f"arb_executor_balance_free{{{ven}}}", "{{venue}} {{asset}}"),),
                      kind="table", width=12, height=5),
            )),
            Row("Risk and gate", (
                Panel("Unhedged exposure (base)",
                      (q("arb_executor_unhedged_exposure", "{{symbol}}"),), unit="none",
                      description="Bought minus sold by the symbol's last intent's two legs."),
                Panel("Intents in flight", (q("arb_executor_intents_in_flight", "in flight"),),
                      decimals=0),
                Panel("Gate", (q(f"arb_executor_gate_open{{{ven}}}", "{{venue}}"),), kind="stat",
                      mappings=OPEN, thresholds=((None, "red"), (1, "green")), height=5),
                Panel("Slippage: realized vs expected (bps)", (
                    q(f"histogram_quantile(0.5, sum by (venue, le) "
                      f"(rate(arb_state_slippage_bps_bucket{{{ven}}}[15m])))", "p50 {{venue}}"),
                    q(f"histogram_quantile(0.95, sum by (venue, le) "
                      f"(rate(arb_state_slippage_bps_bucket{{{ven}}}[15m])))", "p95 {{venue}}"),
                ), unit="none", width=12, thresholds=((None, "green"), (10, "red")),
                      description="Leg fills against their intent's price, bps, > 0 = worse "
                                  "(hedge fills left out). Per fill: state API /api/slippage."),
                Panel("Slippage rows derived / min",
                      (q("rate(arb_state_slippage_rows_total[5m]) * 60", "rows"),), unit="none",
                      width=12,
                      description="Leg fills joined with their intents' expected prices "
                                  "(slippage_analysis)."),
                Panel("Simulator orders and trades / min", (
                    q(f"sum by (venue, status) (rate(arb_venue_sim_orders_total{{{ven}}}[5m]))"
                      f" * 60", "orders {{venue}} {{status}}"),
                    q(f"sum by (venue) (rate(arb_venue_sim_trades_total{{{ven}}}[5m])) * 60",
                      "trades {{venue}}"),
                    q(f"sum by (venue, reason) (rate(arb_venue_sim_rejects_total{{{ven}}}[5m]))"
                      f" * 60", "rejects {{venue}} {{reason}}"),
                ), unit="none", width=12),
            )),
        ),
    )


def reconciliation() -> Dashboard:
    ven = 'venue=~"$venue"'
    return Dashboard(
        "arb-reconciliation", "arb / Reconciliation",
        "Recon runs, duration, discrepancies by kind, corrections, in-flight work.",
        variables=(query_variable("venue", "Venue", "arb_reconciler_venue_ready", "venue"),),
        rows=(
            Row("Runs", (
                Panel("Venue reconciled", (q(f"arb_reconciler_venue_ready{{{ven}}}",
                                             "{{venue}}"),), kind="stat", mappings=READY,
                      thresholds=((None, "red"), (1, "green")), height=5),
                Panel("Since the last successful run",
                      (q(f'time() - arb_reconciler_last_run_timestamp_seconds{{{ven}, '
                         f'result="ok"}}', "{{venue}}"),), kind="stat", unit="s", height=5,
                      thresholds=((None, "green"), (60, "orange"), (300, "red")),
                      description="ReconciliationStale fires after 5 minutes."),
                Panel("Runs (15 m)", (q(f"sum by (venue, result) "
                                        f"(increase(arb_reconciler_runs_total{{{ven}}}[15m]))",
                                        "{{venue}} {{result}}"),), kind="bargauge", decimals=0,
                      height=5),
                Panel("Run duration", (
                    q(f"histogram_quantile(0.5, sum by (venue, le) "
                      f"(rate(arb_reconciler_run_seconds_bucket{{{ven}}}[15m])))", "p50 {{venue}}"),
                    q(f"histogram_quantile(0.99, sum by (venue, le) "
                      f"(rate(arb_reconciler_run_seconds_bucket{{{ven}}}[15m])))", "p99 {{venue}}"),
                ), unit="s", width=12),
                Panel("Runs / min", (q(f"sum by (venue, result) "
                                       f"(rate(arb_reconciler_runs_total{{{ven}}}[5m])) * 60",
                                       "{{venue}} {{result}}"),), unit="none", width=12),
            )),
            Row("Differences", (
                Panel("Discrepancies by kind (1 h)",
                      (q(f"sum by (venue, kind) "
                         f"(increase(arb_reconciler_discrepancies_total{{{ven}}}[1h]))",
                         "{{venue}} {{kind}}"),), kind="bargauge", decimals=0,
                      thresholds=((None, "green"), (1, "orange"))),
                Panel("Corrective events (1 h)",
                      (q(f"sum by (venue) (increase(arb_reconciler_corrections_total{{{ven}}}"
                         f"[1h]))", "{{venue}}"),), kind="bargauge", decimals=0),
                Panel("External orders / trades (1 h)",
                      (q(f"sum by (venue, kind, policy) "
                         f"(increase(arb_reconciler_external_total{{{ven}}}[1h]))",
                         "{{venue}} {{kind}} ({{policy}})"),), kind="bargauge", decimals=0),
            )),
            Row("In flight and balances", (
                Panel("Orders in flight (ledger)",
                      (q(f"arb_reconciler_inflight_orders{{{ven}}}", "{{venue}}"),), decimals=0,
                      description="Ledger orders NEW, SUBMITTED or UNKNOWN."),
                Panel("Oldest in-flight order", (q(f"arb_reconciler_inflight_oldest_seconds"
                                                   f"{{{ven}}}", "{{venue}}"),), unit="s",
                      thresholds=((None, "green"), (120, "red"))),
                Panel("Venue halted", (q(f"arb_reconciler_venue_halted{{{ven}}}", "{{venue}}"),),
                      kind="stat", mappings=(("0", "TRADING", "green"), ("1", "HALTED", "red")),
                      thresholds=((None, "green"), (1, "red")), height=5,
                      description="New entries halted after drift; `arbctl ack VENUE` resumes."),
                Panel("Balance drift (venue - ledger expectation)",
                      (q(f"arb_reconciler_balance_drift{{{ven}}}", "{{venue}} {{asset}}"),),
                      unit="none", width=12),
                Panel("Missing fills recorded / intents executing", (
                    q(f"sum by (venue) (increase(arb_reconciler_missing_fills_total{{{ven}}}[1h]))",
                      "missing fills 1 h {{venue}}"),
                    q("arb_executor_intents_in_flight", "intents in flight (executor)"),
                ), decimals=0, width=12),
            )),
        ),
    )


DASHBOARDS = (overview, trading, market_data, execution, reconciliation)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for make in DASHBOARDS:
        d = make()
        path = OUT / f"{d.uid}.json"
        text = json.dumps(render(d), indent=2, sort_keys=False) + "\n"
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python3 deploy/grafana/generate.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
