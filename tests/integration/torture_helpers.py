"""Helpers of the torture test (tests/integration/test_torture.py): the simulator's truth,
the state API, the bus, kills, and the end-of-campaign comparison of ledger and venues.

Everything is synchronous (the test drives a stack of processes) and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import nats
import orjson
from nats.js.api import DeliverPolicy
from stack_helpers import nats_request

from arb_common.subjects import Subjects
from arb_common.testing import delete_prefixed_streams
from arbctl.stack import Stack

OPEN_STATUSES = ("NEW", "SUBMITTED", "ACKED", "PARTIALLY_FILLED", "UNKNOWN")
VENUE_OPEN = ("NEW", "PARTIALLY_FILLED")
EXTERNAL_KINDS = ("external_order", "external_trade")
ZERO = Decimal(0)


# ---------------------------------------------------------------- generic
def get(url: str, **params: Any) -> Any:
    resp = httpx.get(url, params=params, timeout=10)
    resp.raise_for_status()
    return resp.json()


def wait(pred: Callable[[], Any], timeout: float, step: float = 0.5) -> Any:
    """``pred()`` until truthy or ``timeout`` (then its last value); errors count as falsy."""
    deadline = time.monotonic() + timeout
    got: Any = None
    while True:
        try:
            got = pred()
        except (TimeoutError, httpx.HTTPError, OSError, nats.errors.Error, KeyError):
            got = None
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(step)


def must(pred: Callable[[], Any], timeout: float, what: str, step: float = 0.5) -> Any:
    got = wait(pred, timeout, step)
    if not got:
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
    return got


# ---------------------------------------------------------------- the simulator
class Sim:
    """The simulator's control API: the venues' own truth, faults, external orders."""

    def __init__(self, base: str) -> None:
        self.base = base

    def orders(self, venue: str) -> list[dict[str, Any]]:
        return list(get(f"{self.base}/control/venues/{venue}/orders")["orders"])

    def balances(self, venue: str) -> dict[str, Decimal]:
        raw = get(f"{self.base}/control/venues/{venue}/balances")["balances"]
        return {asset: Decimal(b["total"]) for asset, b in raw.items()}

    def fault(self, venue: str, kind: str, value: float | None = None,
              duration_s: float | None = None) -> None:
        body: dict[str, Any] = {"kind": kind, "value": value, "duration_s": duration_s}
        resp = httpx.post(f"{self.base}/control/venues/{venue}/faults", json=body, timeout=10)
        resp.raise_for_status()

    def clear(self, venue: str) -> None:
        httpx.delete(f"{self.base}/control/venues/{venue}/faults", timeout=10).raise_for_status()

    def external_order(self, venue: str, symbol: str, side: str, quantity: str) -> dict[str, Any]:
        resp = httpx.post(f"{self.base}/control/venues/{venue}/orders",
                          json={"symbol": symbol, "side": side, "quantity": quantity}, timeout=10)
        resp.raise_for_status()
        return dict(resp.json())

    def lost_responses(self) -> dict[str, int]:
        """Order responses the venues dropped (``arb_venue_sim_rejects_total``)."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        out: dict[str, int] = {}
        pat = re.compile(r'^arb_venue_sim_rejects_total\{(.*)\} ([0-9.e+]+)$')
        for line in text.splitlines():
            m = pat.match(line)
            if not m or 'reason="fault_lost_response"' not in m.group(1):
                continue
            venue = re.search(r'venue="([^"]+)"', m.group(1))
            if venue:
                out[venue.group(1)] = out.get(venue.group(1), 0) + int(float(m.group(2)))
        return out


# ---------------------------------------------------------------- the state API
class StateApi:
    def __init__(self, base: str) -> None:
        self.base = base

    def all(self, what: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(10_000):  # bounded: 10M rows
            page = get(f"{self.base}/api/{what}", limit=1000, **params,
                       **({"cursor": cursor} if cursor else {}))
            items.extend(page["items"])
            cursor = page["next"]
            if not cursor:
                break
        return items

    def sync_status(self) -> dict[str, Any]:
        return dict(get(f"{self.base}/api/sync_status"))


# ---------------------------------------------------------------- the bus
def strategy_state(nats_url: str, prefix: str) -> dict[str, Any]:
    reply = nats_request(nats_url, Subjects(prefix).ctl("strategy", "state"), {})
    assert reply.get("ok"), reply
    return dict(reply["state"])


def stream_payloads(nats_url: str, prefix: str, pattern: str, msg_type: str,
                    idle_s: float = 2.0, max_s: float = 60.0) -> list[dict[str, Any]]:
    """Every ``msg_type`` payload on ``pattern`` (JSON, loosely decoded: the reader must not
    break when a payload grows a field), from the start of the stream."""
    async def go() -> list[dict[str, Any]]:
        nc = await nats.connect(nats_url)
        out: list[dict[str, Any]] = []
        try:
            js = nc.jetstream()
            sub = await js.subscribe(Subjects(prefix).any(pattern), ordered_consumer=True,
                                     deliver_policy=DeliverPolicy.ALL)
            deadline = time.monotonic() + max_s
            while time.monotonic() < deadline:
                try:
                    msg = await sub.next_msg(timeout=idle_s)
                except nats.errors.TimeoutError:
                    break
                try:
                    env = orjson.loads(msg.data)
                except orjson.JSONDecodeError:
                    continue
                if env.get("type") == msg_type and isinstance(env.get("payload"), dict):
                    out.append({**env["payload"], "_session": env.get("session")})
        finally:
            await nc.close()
        return out

    return asyncio.run(go())


def delete_streams(nats_url: str, prefix: str) -> None:
    """Remove this run's streams from the shared NATS."""
    asyncio.run(delete_prefixed_streams(nats_url, prefix))


# ---------------------------------------------------------------- processes
def pid_of(stack: Stack, name: str) -> int | None:
    for row in stack.processes():
        if row["name"] == name:
            return int(row["pid"]) if row["pid"] else None
    return None


def kill9_and_wait_back(stack: Stack, name: str, timeout: float = 120) -> float:
    """SIGKILL ``name``; wait until the supervisor restarted it and it is ready. Seconds."""
    old = pid_of(stack, name)
    assert old, f"{name} has no pid"
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    must(lambda: any(r["name"] == name and r["pid"] and r["pid"] != old and r["ready"]
                     for r in stack.processes()), timeout, f"{name} restarted and ready")
    return time.monotonic() - t0


# ---------------------------------------------------------------- money
def fills_effect(fills: list[dict[str, Any]], symbol_key: str = "symbol"
                 ) -> dict[str, Decimal]:
    """Per asset, what these fills did to a spot account: a buy adds the base and pays
    ``qty * price`` of the quote, a sell the other way round; the fee is paid in its asset."""
    out: dict[str, Decimal] = {}
    for f in fills:
        base, quote = str(f[symbol_key]).split("-", 1)
        qty, price, fee = Decimal(f["quantity"]), Decimal(f["price"]), Decimal(f["fee"])
        sign = 1 if f["side"] == "buy" else -1
        out[base] = out.get(base, ZERO) + sign * qty
        out[quote] = out.get(quote, ZERO) - sign * qty * price
        if fee:
            asset = f.get("fee_asset") or quote
            out[asset] = out.get(asset, ZERO) - fee
    return {a: v for a, v in out.items() if v != 0}


def diff(a: dict[str, Decimal], b: dict[str, Decimal]) -> dict[str, Decimal]:
    keys = set(a) | set(b)
    return {k: a.get(k, ZERO) - b.get(k, ZERO) for k in sorted(keys)
            if a.get(k, ZERO) != b.get(k, ZERO)}


def venue_fills(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fills of venue order records, each with its order's symbol, side and coid."""
    return [{**f, "symbol": r["symbol"], "side": r["side"],
             "client_order_id": r["client_order_id"]}
            for r in records for f in r["fills"]]


# ---------------------------------------------------------------- the final comparison
@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class VenueTruth:
    venue: str
    ours: list[dict[str, Any]]  # the venue's records of our orders
    external: list[dict[str, Any]]  # the venue's records of orders placed by hand
    ledger_orders: list[dict[str, Any]]
    ledger_fills: list[dict[str, Any]]
    start: dict[str, Decimal]
    end: dict[str, Decimal]
    checks: list[Check] = field(default_factory=list)


def _short(items: list[Any], n: int = 5) -> str:
    return f"{items[:n]}{' ...' if len(items) > n else ''} ({len(items)})"


def compare_venue(t: VenueTruth) -> list[Check]:  # noqa: C901 - one list of checks
    """Every check of one venue: ledger orders and fills equal the venue's exactly, nothing
    sent or recorded twice, and the balances' change equals our fills plus the external
    order's."""
    v = t.venue
    checks: list[Check] = []

    # No client order id sent twice (the venue counts what it received).
    sent = Counter(r["client_order_id"] for r in t.ours)
    twice = sorted(c for c, n in sent.items() if n > 1)
    checks.append(Check(f"{v}: no client order id sent twice", not twice,
                        f"sent more than once: {_short(twice)}"))

    # Orders: every order the venue received is in the ledger with the venue's state.
    ledger = {o["client_order_id"]: o for o in t.ledger_orders}
    venue_by_coid = {r["client_order_id"]: r for r in t.ours}
    missing = sorted(c for c in venue_by_coid if c not in ledger)
    checks.append(Check(f"{v}: every venue order is in the ledger", not missing,
                        f"on the venue, not in the ledger: {_short(missing)}"))
    differ: list[str] = []
    for coid, r in venue_by_coid.items():
        lo = ledger.get(coid)
        if lo is None:
            continue
        want = (r["symbol"], r["side"], Decimal(r["quantity"]), Decimal(r["filled_quantity"]),
                r["status"], r["venue_order_id"])
        got = (lo["symbol"], lo["side"], Decimal(lo["quantity"]),
               Decimal(lo["filled_quantity"] or 0), lo["status"], lo.get("venue_order_id"))
        if want != got:
            differ.append(f"{coid}: venue {want} ledger {got}")
    checks.append(Check(f"{v}: ledger orders equal the venue's (status, quantities, ids)",
                        not differ, _short(differ, 3)))
    # Ledger-only orders were never on the venue: refused locally (or canceled as stale by
    # the reconciler), nothing filled, nothing left open.
    only_ledger = [o for c, o in ledger.items() if c not in venue_by_coid]
    bad_only = [f"{o['client_order_id']}:{o['status']}:{o['filled_quantity']}"
                for o in only_ledger
                if o["status"] not in ("REJECTED", "CANCELED")
                or Decimal(o["filled_quantity"] or 0) != 0]
    checks.append(Check(f"{v}: ledger orders the venue never saw are closed and unfilled",
                        not bad_only, _short(bad_only)))
    still_open = [f"{o['client_order_id']}:{o['status']}" for o in t.ledger_orders
                  if o["status"] in OPEN_STATUSES]
    checks.append(Check(f"{v}: no ledger order left open", not still_open, _short(still_open)))

    # Fills: exactly the venue's trades of our orders, each once, same numbers.
    per_trade = Counter(f["venue_trade_id"] for f in t.ledger_fills)
    dup = sorted(k for k, n in per_trade.items() if n > 1)
    checks.append(Check(f"{v}: no fill recorded twice", not dup, _short(dup)))
    vf = {f["trade_id"]: f for f in venue_fills(t.ours)}
    lf = {f["venue_trade_id"]: f for f in t.ledger_fills}
    lost = sorted(set(vf) - set(lf), key=int)
    extra = sorted(set(lf) - set(vf))
    checks.append(Check(f"{v}: every venue fill of ours is in the ledger", not lost,
                        f"missing trade ids: {_short(lost)}"))
    ext_trades = {f["trade_id"] for f in venue_fills(t.external)}
    adopted = sorted(set(lf) & ext_trades)
    checks.append(Check(f"{v}: no ledger fill the venue does not have for our orders",
                        not extra, f"extra trade ids: {_short(extra)} (external adopted: "
                        f"{adopted})"))
    fdiff: list[str] = []
    for tid in set(vf) & set(lf):
        a, b = vf[tid], lf[tid]
        want = (a["client_order_id"], Decimal(a["quantity"]), Decimal(a["price"]),
                Decimal(a["fee"]), a["fee_asset"])
        got = (b["client_order_id"], Decimal(b["quantity"]), Decimal(b["price"]),
               Decimal(b["fee"]), b["fee_asset"])
        if want != got:
            fdiff.append(f"trade {tid}: venue {want} ledger {got}")
    checks.append(Check(f"{v}: ledger fills equal the venue's (qty, price, fee)", not fdiff,
                        _short(fdiff, 3)))

    # Balances: the venue's change = what our ledger's fills imply + the external order.
    change = diff(t.end, t.start)
    ours = fills_effect(t.ledger_fills)
    ext = fills_effect(venue_fills(t.external))
    unexplained = diff(change, ours)
    checks.append(Check(
        f"{v}: venue balance change minus our ledger's fills = exactly the external order",
        unexplained == ext,
        f"venue change {change}; ledger fills imply {ours}; difference {unexplained}; "
        f"external order's effect {ext}"))
    return checks
