"""Round trips and trade statistics: ``/api/trades`` and ``/api/summary``.

A **round trip** is the fills of one ``trade_id`` (within one mode and session): the open
intent's fills (``intent_id`` = ``<trade_id>:open``) and the close intent's
(``<trade_id>:close``). It is **closed** when it has close fills and every venue's net base
quantity is back to 0. Its PnL, in the quote asset, is sell proceeds − buy cost − fees (fees
valued like :func:`arb_common.positions.fee_in_quote`; a fee in a third asset is not booked).

- **R multiple** = PnL / (entry notional × ``risk_unit_bps`` / 10,000); the entry notional is
  the larger of the open buy leg's and the open sell leg's notional (the two legs of a hedged
  entry are about equal; a one-sided entry has only one).
- **winrate** = wins / trades, a win being PnL > 0 (a PnL of exactly 0 counts as a loss).
- **expectancy** = avg win × winrate − avg loss × lossrate (avg loss as a positive amount):
  the PnL to expect per trade, quote asset.
- **max drawdown** = largest peak-to-trough fall of cumulative round-trip PnL, starting at
  0, over closed round trips in close order (and, for the portfolio, of ``equity_history``
  within each session when there is any).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Subquery,
    and_,
    any_,
    case,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.engine import Connection, Engine

from arb_common.ledger import EquityHistory, Fill, Position, SlippageAnalysis
from arb_common.money import BPS, ZERO, to_str

from .marks import Mark, MarkSource, resolve_marks, unrealized
from .queries import ListFilter, decode_cursor, encode_cursor, scope

SIDES = (("ob", "open", "buy"), ("os", "open", "sell"), ("cb", "close", "buy"),
         ("cs", "close", "sell"))  # fmt: skip


def fee_quote_sql() -> Any:
    """A fill's fee in its symbol's quote asset (SQL twin of ``fee_in_quote``; others 0)."""
    f = Fill
    asset = func.upper(f.fee_asset)
    return case(
        (asset == func.split_part(f.symbol, "-", 2), f.fee),
        (asset == func.split_part(f.symbol, "-", 1), f.fee * f.price),
        else_=0,
    )


def _legs(conds: Sequence[ColumnElement[bool]]) -> Subquery:
    """Per (mode, session, trade_id, venue): net quantity, cash, fees, per-side sums, times."""
    f = Fill
    closing = f.intent_id.like("%:close")
    notional = f.quantity * f.price
    cols: list[Any] = [
        f.mode, f.session, f.trade_id, f.venue, func.min(f.symbol).label("symbol"),
        func.sum(case((f.side == "buy", f.quantity), else_=-f.quantity)).label("net"),
        func.sum(case((f.side == "sell", notional), else_=-notional)).label("cash"),
        func.sum(fee_quote_sql()).label("fees"),
        func.min(f.ts).filter(~closing).label("entry_ts"),
        func.max(f.ts).filter(closing).label("exit_ts"),
        func.min(f.ts).label("first_ts"), func.max(f.ts).label("last_ts"),
        func.bool_or(closing).label("closing"),
    ]  # fmt: skip
    for name, action, side in SIDES:
        when = and_(closing if action == "close" else ~closing, f.side == side)
        cols.append(func.coalesce(func.sum(f.quantity).filter(when), 0).label(f"{name}_q"))
        cols.append(func.coalesce(func.sum(notional).filter(when), 0).label(f"{name}_n"))
    return (
        select(*cols).where(f.trade_id != "", *conds)
        .group_by(f.mode, f.session, f.trade_id, f.venue).subquery("legs")
    )  # fmt: skip


def trips_select(conds: Sequence[ColumnElement[bool]], *, closed_only: bool) -> Select[Any]:
    """One row per round trip of the fills selected by ``conds``."""
    g = _legs(conds).c
    cols: list[Any] = [
        g.mode, g.session, g.trade_id, func.min(g.symbol).label("symbol"),
        func.sum(g.cash).label("cash"), func.sum(g.fees).label("fees"),
        func.array_agg(g.venue).label("venues"),
        func.coalesce(func.min(g.entry_ts), func.min(g.first_ts)).label("entry_ts"),
        func.coalesce(func.max(g.exit_ts), func.max(g.last_ts)).label("exit_ts"),
        func.bool_and(g.net == 0).label("flat"), func.bool_or(g.closing).label("closing"),
    ]  # fmt: skip
    for name, _, _ in SIDES:
        q = g[f"{name}_q"]
        cols += [func.sum(q).label(f"{name}_q"), func.sum(g[f"{name}_n"]).label(f"{name}_n"),
                 func.array_agg(g.venue).filter(q > 0).label(f"{name}_v")]  # fmt: skip
    stmt = select(*cols).group_by(g.mode, g.session, g.trade_id)
    if closed_only:
        stmt = stmt.having(and_(func.bool_and(g.net == 0), func.bool_or(g.closing)))
    return stmt


def _slippage_by_trade(conds: Sequence[ColumnElement[bool]]) -> Subquery:
    sa = SlippageAnalysis
    return (
        select(sa.mode, sa.session, sa.trade_id, func.count().label("slip_n"),
               func.sum(sa.slippage_quote).label("slip_q"),
               func.sum(sa.quantity * sa.expected_price).label("slip_base"))
        .where(sa.trade_id != "", *conds).group_by(sa.mode, sa.session, sa.trade_id)
        .subquery("slip")
    )  # fmt: skip


@dataclass(frozen=True)
class Trip:
    """One round trip as computed from its fills (see the module docstring)."""

    row: Any  # a row of :func:`trips_select`

    @property
    def closed(self) -> bool:
        return bool(self.row.flat and self.row.closing)

    @property
    def pnl(self) -> Decimal:
        return Decimal(self.row.cash - self.row.fees)

    @property
    def entry_notional(self) -> Decimal:
        return Decimal(max(self.row.ob_n, self.row.os_n))

    def r_multiple(self, risk_unit_bps: Decimal) -> Decimal | None:
        risk = self.entry_notional * risk_unit_bps / BPS
        return self.pnl / risk if risk > 0 else None


def _side_json(row: Any, name: str) -> dict[str, Any] | None:
    qty, notional = row[f"{name}_q"], row[f"{name}_n"]
    if not qty:
        return None
    return {"venues": sorted(set(row[f"{name}_v"] or [])), "quantity": to_str(qty),
            "vwap": to_str(notional / qty)}  # fmt: skip


def _ratio(value: Decimal | None) -> float | None:
    return None if value is None else round(float(value), 6)


def trip_json(trip: Trip, risk_unit_bps: Decimal) -> dict[str, Any]:
    r = trip.row._mapping
    slip = None
    if r.get("slip_n"):
        base = r["slip_base"]
        slip = {"fills": r["slip_n"], "quote": to_str(r["slip_q"]),
                "bps": round(float(r["slip_q"] / base * BPS), 4) if base else None}  # fmt: skip
    return {
        "trade_id": r["trade_id"], "mode": r["mode"], "session": r["session"],
        "symbol": r["symbol"], "venues": sorted(set(r["venues"])),
        "quantity": to_str(max(r["ob_q"], r["os_q"])),
        "entry": {"ts": r["entry_ts"].isoformat(), "buy": _side_json(r, "ob"),
                  "sell": _side_json(r, "os")},
        "exit": {"ts": r["exit_ts"].isoformat(), "buy": _side_json(r, "cb"),
                 "sell": _side_json(r, "cs")},
        "fees": to_str(r["fees"]), "pnl": to_str(trip.pnl),
        "r_multiple": _ratio(trip.r_multiple(risk_unit_bps)), "slippage": slip,
    }  # fmt: skip


def list_trades(engine: Engine, f: ListFilter, risk_unit_bps: Decimal) -> dict[str, Any]:
    """Closed round trips, most recently closed first; ``since``/``until`` on the exit time,
    ``venue`` = the trip traded on that venue; keyset on (exit_ts, mode, session, trade_id)."""
    conds = scope(Fill, f.mode, f.session)
    if f.symbol is not None:
        conds.append(Fill.symbol == f.symbol)
    trips = trips_select(conds, closed_only=True).subquery("trips")
    slip = _slippage_by_trade(scope(SlippageAnalysis, f.mode, f.session))
    t, s = trips.c, slip.c
    where: list[ColumnElement[bool]] = []
    if f.venue is not None:
        where.append(literal(f.venue) == any_(t.venues))
    if f.since is not None:
        where.append(t.exit_ts >= f.since)
    if f.until is not None:
        where.append(t.exit_ts < f.until)
    key = (t.exit_ts, t.mode, t.session, t.trade_id)
    if f.cursor:
        parts = decode_cursor("trade", f.cursor, (datetime, str, str, str))
        where.append(tuple_(*key) < tuple_(*parts))
    join_on = and_(s.mode == t.mode, s.session == t.session, s.trade_id == t.trade_id)
    stmt = (
        select(trips, s.slip_n, s.slip_q, s.slip_base).select_from(trips.outerjoin(slip, join_on))
        .where(and_(True, *where)).order_by(*(c.desc() for c in key)).limit(f.limit + 1)
    )  # fmt: skip
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    items = [trip_json(Trip(r), risk_unit_bps) for r in rows]
    nxt = None
    if more and rows:
        last = rows[-1]
        nxt = encode_cursor("trade", (last.exit_ts.isoformat(), last.mode, last.session,
                                      last.trade_id))
    return {"items": items, "next": nxt}


# ------------------------------------------------------------------ statistics


@dataclass
class TradeStats:
    """Running statistics over closed round trips fed in close order."""

    trades: int = 0
    wins: int = 0
    gross_profit: Decimal = ZERO
    gross_loss: Decimal = ZERO  # positive amount
    r_sum: Decimal = ZERO
    r_count: int = 0
    cumulative: Decimal = ZERO
    peak: Decimal = ZERO
    max_drawdown: Decimal = ZERO

    def add(self, pnl: Decimal, r: Decimal | None) -> None:
        self.trades += 1
        if pnl > 0:
            self.wins += 1
            self.gross_profit += pnl
        else:
            self.gross_loss -= pnl
        if r is not None:
            self.r_sum += r
            self.r_count += 1
        self.cumulative += pnl
        self.peak = max(self.peak, self.cumulative)
        self.max_drawdown = max(self.max_drawdown, self.peak - self.cumulative)

    def to_json(self) -> dict[str, Any]:
        n, w = self.trades, self.wins
        losses = n - w
        avg_win = self.gross_profit / w if w else None
        avg_loss = self.gross_loss / losses if losses else None
        # avg win × winrate − avg loss × lossrate = (gross profit − gross loss) / trades; the
        # right-hand side divides once, so it stays exact whenever the mean PnL is.
        expectancy = (self.gross_profit - self.gross_loss) / n if n else None
        return {
            "trades": n, "wins": w, "losses": losses,
            "winrate": round(w / n, 4) if n else None,
            "round_trip_pnl": to_str(self.cumulative),
            "avg_win": None if avg_win is None else to_str(avg_win),
            "avg_loss": None if avg_loss is None else to_str(avg_loss),
            "expectancy": None if expectancy is None else to_str(expectancy),
            "avg_r": _ratio(self.r_sum / self.r_count) if self.r_count else None,
            "max_drawdown": to_str(self.max_drawdown),
        }  # fmt: skip


@dataclass
class SymbolBook:
    """Everything the summary gathers for one symbol (or the portfolio)."""

    realized: Decimal = ZERO
    unrealized: Decimal = ZERO
    open_quantity: Decimal = ZERO
    fees: Decimal = ZERO
    fees_by_asset: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    open_trades: int = 0
    stats: TradeStats = field(default_factory=TradeStats)
    marks: dict[str, Mark] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "realized_pnl": to_str(self.realized), "unrealized_pnl": to_str(self.unrealized),
            "equity": to_str(self.realized + self.unrealized), "fees": to_str(self.fees),
            "fees_by_asset": {a: to_str(v) for a, v in sorted(self.fees_by_asset.items())},
            "open_quantity": to_str(self.open_quantity), "open_trades": self.open_trades,
            **self.stats.to_json(),
        }  # fmt: skip


def _positions(
    conn: Connection, per: dict[str, SymbolBook], mode: str | None, session: str | None,
    live: MarkSource | None,
) -> None:  # fmt: skip
    p = Position
    rows = conn.execute(select(p).where(and_(True, *scope(p, mode, session)))).all()
    open_keys = {(r.venue, r.symbol) for r in rows if r.quantity != 0}
    marks = resolve_marks(conn, open_keys, live, scope(Fill, mode, session))
    for r in rows:
        book = per[r.symbol]
        book.realized += r.realized_pnl
        book.open_quantity += r.quantity
        mark = marks.get((r.venue, r.symbol))
        book.unrealized += unrealized(r.quantity, r.avg_price, mark)
        if r.quantity != 0 and mark is not None:
            book.marks[r.venue] = mark


def _fees(conn: Connection, per: dict[str, SymbolBook], conds: list[ColumnElement[bool]]) -> None:
    f = Fill
    stmt = (
        select(f.symbol, f.fee_asset, func.sum(f.fee), func.sum(fee_quote_sql()))
        .where(and_(True, *conds)).group_by(f.symbol, f.fee_asset)
    )  # fmt: skip
    for symbol, fee_asset, fee, fee_value in conn.execute(stmt):
        per[symbol].fees_by_asset[fee_asset] += fee
        per[symbol].fees += fee_value


def _equity_drawdown(conn: Connection, mode: str | None, session: str | None) -> Decimal | None:
    """Largest peak-to-trough fall of ``equity_history`` within any one session in scope."""
    e = EquityHistory
    peak = func.max(e.equity).over(partition_by=(e.mode, e.session), order_by=(e.ts, e.id))
    inner = select((peak - e.equity).label("dd")).where(and_(True, *scope(e, mode, session)))
    dd = inner.subquery("dd")
    value = conn.execute(select(func.max(dd.c.dd))).scalar_one_or_none()
    return None if value is None else Decimal(value)


def _trip_stats(
    conn: Connection, per: dict[str, SymbolBook], total: SymbolBook,
    conds: list[ColumnElement[bool]], risk_unit_bps: Decimal,
) -> None:  # fmt: skip
    trips = [Trip(r) for r in conn.execute(trips_select(conds, closed_only=False))]
    closed = sorted((t for t in trips if t.closed),
                    key=lambda t: (t.row.exit_ts, t.row.mode, t.row.session, t.row.trade_id))
    for t in closed:
        r = t.r_multiple(risk_unit_bps)
        per[t.row.symbol].stats.add(t.pnl, r)
        total.stats.add(t.pnl, r)
    for t in trips:
        if not t.closed:
            per[t.row.symbol].open_trades += 1


def summary(
    engine: Engine, mode: str | None, session: str | None, *,
    marks: MarkSource | None = None, risk_unit_bps: Decimal = Decimal(50),
) -> dict[str, Any]:  # fmt: skip
    """Per symbol and for the portfolio: realized (positions), unrealized (marks), equity,
    fees, round-trip statistics (see the module docstring)."""
    per: dict[str, SymbolBook] = defaultdict(SymbolBook)
    total = SymbolBook()
    conds = scope(Fill, mode, session)
    with engine.connect() as conn:
        _positions(conn, per, mode, session, marks)
        _fees(conn, per, conds)
        _trip_stats(conn, per, total, conds, risk_unit_bps)
        equity_dd = _equity_drawdown(conn, mode, session)
    symbols: dict[str, Any] = {}
    for symbol in sorted(per):
        b = per[symbol]
        _add_into(total, b)
        symbols[symbol] = {
            **b.to_json(),
            "marks": {v: {"price": to_str(m.price), "source": m.source}
                      for v, m in sorted(b.marks.items())},
        }  # fmt: skip
    portfolio = total.to_json()
    portfolio["max_drawdown_equity"] = None if equity_dd is None else to_str(equity_dd)
    return {"mode": mode or "all", "session": session or "all", "symbols": symbols,
            "total": portfolio}  # fmt: skip


def _add_into(total: SymbolBook, b: SymbolBook) -> None:
    total.realized += b.realized
    total.unrealized += b.unrealized
    total.open_quantity += b.open_quantity
    total.fees += b.fees
    total.open_trades += b.open_trades
    for asset, amount in b.fees_by_asset.items():
        total.fees_by_asset[asset] += amount
