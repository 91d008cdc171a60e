"""Prometheus metrics of market-data (``arb_market_data_*``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FRAMES = Counter("arb_market_data_frames_total", "WebSocket frames received", ["venue"])
BAD_FRAMES = Counter(
    "arb_market_data_bad_frames_total", "Frames that could not be decoded", ["venue"]
)
BOOKS_PUBLISHED = Counter(
    "arb_market_data_books_published_total", "Books published on the bus", ["venue", "symbol"]
)
RECONNECTS = Counter("arb_market_data_reconnects_total", "WebSocket reconnect attempts", ["venue"])
GAPS = Counter(
    "arb_market_data_gaps_total", "Sequence gaps detected (book resynced)", ["venue", "symbol"]
)
RESYNCS = Counter(
    "arb_market_data_snapshots_total", "REST depth snapshots fetched", ["venue", "symbol"]
)
FEED_LAG = Histogram(
    "arb_market_data_feed_lag_seconds",
    "Frame receive time minus venue event time (E)",
    ["venue"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BOOK_AGE = Gauge(
    "arb_market_data_book_age_seconds", "Seconds since the book last changed", ["venue", "symbol"]
)
CONNECTED = Gauge("arb_market_data_connected", "1 while the venue WebSocket is up", ["venue"])
