"""The live terminal view of ``arbctl up`` (rich), refreshed about once a second.

Shows each process (healthy / ready / restarts), the best bid and ask per venue and symbol
(from ``md.book.*.*`` on the bus), and from the state API open positions, the summary (PnL)
and the last fills. Every source degrades to "n/a" while it is not there.
"""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal
from typing import Any

import httpx
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from arbctl import status


class BookWatcher:
    """Keeps the best bid/ask of every book published on the bus (core NATS subscription)."""

    def __init__(self, nats_url: str, bus_prefix: str = "") -> None:
        self.nats_url = nats_url
        self.bus_prefix = bus_prefix
        self.books: dict[tuple[str, str], dict[str, Any]] = {}
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arbctl-books", daemon=True)

    def start(self) -> BookWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(3)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                asyncio.run(self._watch())
            except Exception as exc:  # noqa: BLE001 - shown in the view, retried
                self.error = f"bus: {exc!r}"[:120]
            self._stop.wait(2)

    async def _watch(self) -> None:
        from arb_common.messages import Book, decode
        from arb_common.subjects import Subjects
        from arbctl.control import nats_connect

        nc = await asyncio.wait_for(nats_connect(self.nats_url, 2.0), 3.0)

        async def on_msg(msg: Any) -> None:
            try:
                _, book = decode(msg.data, msg.subject)
            except Exception:  # noqa: BLE001 - the view never fails on a bad message
                return
            if isinstance(book, Book):
                self.books[(book.venue, book.symbol)] = {
                    "bid": book.bids[0] if book.bids else None,
                    "ask": book.asks[0] if book.asks else None,
                    "at": time.monotonic(),
                }

        try:
            await nc.subscribe(Subjects(self.bus_prefix).any("md.book.*.*"), cb=on_msg)
            self.error = ""
            while not self._stop.is_set() and nc.is_connected:
                await asyncio.sleep(0.2)
        finally:
            await nc.close()


def fetch_state_api(base: str, timeout: float = 0.8) -> dict[str, Any]:
    """positions, summary and last fills from the state API; missing parts are None."""
    out: dict[str, Any] = {"positions": None, "summary": None, "fills": None}
    paths = {"positions": "/api/positions", "summary": "/api/summary",
             "fills": "/api/fills?limit=5"}
    with httpx.Client(base_url=base, timeout=timeout) as client:
        for key, path in paths.items():
            try:
                resp = client.get(path)
                if resp.status_code == 200:
                    body = resp.json()
                    out[key] = body.get("items", body) if key != "summary" else body
            except (httpx.HTTPError, ValueError):
                pass
    return out


def _mark(ok: bool) -> Text:
    return Text("yes", style="green") if ok else Text("no", style="red")


def process_table(rows: list[dict[str, Any]], recorded: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="processes", expand=True)
    for col in ("name", "pid", "port", "healthy", "ready", "state", "restarts", "last"):
        table.add_column(col, overflow="ellipsis", no_wrap=col != "last")
    for row in rows:
        info = recorded.get(row["name"], {})
        table.add_row(row["name"], str(row["pid"] or "-"), str(row["port"] or "-"),
                      _mark(row["healthy"]), _mark(row["ready"]), str(info.get("state", "-")),
                      str(info.get("restarts", 0)),
                      "" if row["healthy"] else str(info.get("last_error") or ""))
    return table


def books_table(watcher: BookWatcher | None) -> Table:
    table = Table(title="books (best bid / ask)", expand=True)
    for col in ("venue", "symbol", "bid", "bid qty", "ask", "ask qty", "age s"):
        table.add_column(col)
    if watcher is None or not watcher.books:
        note = watcher.error if watcher and watcher.error else "no books on the bus yet"
        table.add_row("n/a", note, "", "", "", "", "")
        return table
    now = time.monotonic()
    for (venue, symbol), b in sorted(watcher.books.items()):
        bid = b["bid"] or (Decimal(0), Decimal(0))
        ask = b["ask"] or (Decimal(0), Decimal(0))
        table.add_row(venue, symbol, str(bid[0]), str(bid[1]), str(ask[0]), str(ask[1]),
                      f"{now - b['at']:.1f}")
    return table


def _items_table(title: str, items: Any, cols: tuple[str, ...]) -> Table:
    table = Table(title=title, expand=True)
    for col in cols:
        table.add_column(col)
    if items is None:
        table.add_row("n/a (state API not answering)", *[""] * (len(cols) - 1))
    elif not items:
        table.add_row("none", *[""] * (len(cols) - 1))
    else:
        for item in list(items)[:10]:
            table.add_row(*[str(item.get(c, "")) for c in cols])
    return table


def summary_text(summary: Any) -> Text:
    if not isinstance(summary, dict):
        return Text("summary: n/a", style="dim")
    parts = [f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict | list)]
    total = summary.get("total")
    if isinstance(total, dict):  # PnL totals of the session
        parts += [f"{k}={v}" for k, v in total.items() if not isinstance(v, dict | list)]
    return Text("summary: " + "  ".join(parts))


def render(header: str, rows: list[dict[str, Any]], recorded: dict[str, dict[str, Any]],
           watcher: BookWatcher | None, api: dict[str, Any]) -> Group:
    return Group(
        Panel(Text(header), title="arbctl up", subtitle="Ctrl-C stops everything"),
        process_table(rows, recorded),
        books_table(watcher),
        _items_table("open positions", api["positions"],
                     ("venue", "symbol", "quantity", "avg_price", "realized_pnl")),
        summary_text(api["summary"]),
        _items_table("recent fills", api["fills"],
                     ("ts", "venue", "symbol", "side", "quantity", "price", "fee")),
    )


def snapshot(home: Any, state: dict[str, Any], port_offset: int,
             watcher: BookWatcher | None) -> Group:
    """Probe everything once and build the screen."""
    rows = status.collect(home, port_offset, timeout=0.5)
    recorded = {p["name"]: p for p in state.get("processes", []) if isinstance(p, dict)}
    state_port = next((r["port"] for r in rows if r["name"] == "state"), 8084 + port_offset)
    api = fetch_state_api(f"http://127.0.0.1:{state_port}")
    healthy = sum(1 for r in rows if r["healthy"])
    header = (f"mode {state.get('mode', '?')}  session {state.get('session', '?')}  "
              f"{healthy}/{len(rows)} healthy  home {home}")
    return render(header, rows, recorded, watcher, api)
