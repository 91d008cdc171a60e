"""Prometheus metrics of venue-sim (served on the control port's ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ORDERS = Counter("arb_venue_sim_orders_total",
                 "Order status transitions on the simulated venues", ["venue", "status"])
REJECTS = Counter("arb_venue_sim_rejects_total",
                  "Requests or orders the simulated venues rejected", ["venue", "reason"])
TRADES = Counter("arb_venue_sim_trades_total", "Fills executed", ["venue", "symbol"])
WS_CONNECTIONS = Gauge("arb_venue_sim_ws_connections", "Open WebSocket connections", ["venue"])
WS_FRAMES = Counter("arb_venue_sim_ws_frames_sent_total", "WebSocket frames sent", ["venue"])
FAULTS_ACTIVE = Gauge("arb_venue_sim_faults_active", "Active injected faults",
                      ["venue", "kind"])
BOOK_UPDATES = Counter("arb_venue_sim_book_updates_total", "Depth update events produced",
                       ["venue", "symbol"])
