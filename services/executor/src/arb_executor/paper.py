"""Paper (and shadow) fills: a market order walks the latest book of the venue.

What a venue would do with a MARKET order, in this order:

1. symbol not listed -> rejected ``Invalid symbol.``; client order id already used (or in
   flight) -> :class:`~arb_executor.venue_client.DuplicateOrder` ``Duplicate order sent.``,
   as the live adapter classifies it (the caller queries the coid); the order "travels" the
   configured latency first, like a real round trip;
2. after the latency, against the book as it is THEN (latest ``md.book.<venue>.<symbol>``):
   quantity < minQty or not on the stepSize grid -> ``Filter failure: LOT_SIZE``; no book,
   or none newer than ``book_stale_s`` -> rejected ``no book ...``; quantity x best price <
   minNotional -> ``Filter failure: NOTIONAL``; the free balance cannot pay for it (buy: the
   walked cost + taker fee in quote; sell: the whole quantity in base) ->
   ``Account has insufficient balance for requested action.``;
3. a buy walks the asks, a sell the bids, one fill per level touched, each charged the taker
   fee in the quote asset (quantized to 8 decimals); not enough depth -> partial fill with
   status ``EXPIRED`` (as Binance does for a market order short of liquidity);
4. the fills move the venue's paper balances at once (base and quote, fee in quote).

Trade ids are ``paper-<coid>-<n>``, the venue order id ``paper-<coid>``. Orders and balances
are rebuilt after a restart from this mode+session's EXEC events
(:mod:`arb_executor.paper_state`), applied through :meth:`PaperVenue.record_order` /
:meth:`PaperVenue.record_fill` (a balance snapshot through :meth:`PaperVenue.set_balances`),
deduplicated by client order id and trade id, so the venue's own fills coming back from the
stream are never applied twice. :meth:`PaperVenue.stream_balances` are the balances the
stream accounts for (what the ledger holds): the free balances less the fills the replay
rebuilt after a crash whose events are not published yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from prometheus_client import Counter

from arb_common.books import BookError, LazyBook, decode_book
from arb_common.bus import Bus
from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.messages import Book, FillEvent, Level, OrderEvent, Side
from arb_common.money import ZERO, D, quantize

from .venue_client import DuplicateOrder, MarketRules, OrderRejected, VenueFill, VenueOrder

logger = logging.getLogger(__name__)

BAD_BOOKS = Counter("arb_executor_bad_books_total",
                    "Books whose levels did not decode when an order or a hedge needed them")

# Binance's own texts (codes -1121, -2010, -1013).
INVALID_SYMBOL = "Invalid symbol."
DUPLICATE = "Duplicate order sent."
INSUFFICIENT = "Account has insufficient balance for requested action."
LOT_SIZE = "Filter failure: LOT_SIZE"
NOTIONAL = "Filter failure: NOTIONAL"

# Start balances when none are given (the settings' default is the same).
DEFAULT_BALANCES = {"USDT": "1000000", "BTC": "10", "ETH": "200", "SOL": "5000"}

_HELD = frozenset({"ACKED", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"})
_TERMINAL = frozenset({"FILLED", "CANCELED", "EXPIRED", "REJECTED"})


class BookCache:
    """Latest book per (venue, symbol), with when it arrived (for the staleness check).

    Books arrive as :class:`~arb_common.books.LazyBook` (:meth:`subscribe`): keeping one costs
    no level decoding; :meth:`get` decodes (once) the book an order or a hedge really uses,
    and answers None for one whose levels do not decode (counted, logged)."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._books: dict[tuple[str, str], Book | LazyBook] = {}
        self._arrived: dict[tuple[str, str], int] = {}

    async def subscribe(self, bus: Bus) -> None:
        await bus.subscribe(bus.subjects.any("md.book.*.*"), self.on_book, where="md.book",
                            decoder=decode_book)

    def update(self, book: Book | LazyBook) -> None:
        key = (book.venue, book.symbol)
        cur = self._books.get(key)
        if cur is None or book.seq >= cur.seq:
            self._books[key] = book
            self._arrived[key] = self.clock.now_ns()

    def get(self, venue: str, symbol: str) -> Book | None:
        book = self._books.get((venue, symbol))
        if isinstance(book, LazyBook):
            try:
                book = book.to_book()
            except BookError as exc:
                BAD_BOOKS.inc()
                logger.error("bad book not used venue=%s symbol=%s error=%s", venue, symbol,
                             exc)
                del self._books[(venue, symbol)]
                return None
            self._books[(venue, symbol)] = book
        return book

    def age_s(self, venue: str, symbol: str) -> float | None:
        """Seconds since the book was received (by market-data when it says, else by us)."""
        key = (venue, symbol)
        book = self._books.get(key)
        if book is None:
            return None
        seen = self._arrived[key]
        if book.recv_ts > 0:
            seen = min(seen, book.recv_ts)
        return max(0.0, (self.clock.now_ns() - seen) / 1e9)

    async def on_book(self, _env: Any, book: Book | LazyBook) -> None:
        self.update(book)


def walk_book(levels: list[Level], quantity: Decimal) -> list[tuple[Decimal, Decimal]]:
    """Consume ``quantity`` from best-first ``levels``: [(price, qty), ...] actually taken."""
    taken: list[tuple[Decimal, Decimal]] = []
    left = quantity
    for price, size in levels:
        if left <= 0:
            break
        if size <= 0:
            continue
        q = min(size, left)
        taken.append((price, q))
        left -= q
    return taken


def check_lot_size(quantity: Decimal, rules: MarketRules) -> None:
    """Binance LOT_SIZE: ``quantity >= minQty`` and ``(quantity - minQty) % stepSize == 0``."""
    if quantity <= 0 or quantity < rules.min_qty:
        raise OrderRejected(f"{LOT_SIZE} (quantity {quantity} < minQty {rules.min_qty})")
    if rules.lot_step > 0 and (quantity - rules.min_qty) % rules.lot_step != 0:
        raise OrderRejected(f"{LOT_SIZE} (quantity {quantity} not a multiple of "
                            f"stepSize {rules.lot_step})")


def fill_market_order(
    book: Book | None,
    *,
    side: Side,
    quantity: Decimal,
    coid: str,
    rules: MarketRules,
    taker_fee: Decimal,
    ts_ms: int,
) -> VenueOrder:
    """Simulated MARKET order against ``book``; raises :class:`OrderRejected` when refused.

    Balances are not looked at here (:class:`PaperVenue` does that); the NOTIONAL filter is
    checked at the best price of the side taken (Binance uses a recent average price).
    """
    check_lot_size(quantity, rules)
    if book is None:
        raise OrderRejected(f"no book for {rules.symbol}")
    levels = book.asks if side == "buy" else book.bids
    if not levels:
        raise OrderRejected(f"no liquidity: no {'asks' if side == 'buy' else 'bids'} "
                            f"for {rules.symbol}")
    if quantity * levels[0][0] < rules.min_notional:
        raise OrderRejected(f"{NOTIONAL} (below minNotional {rules.min_notional})")
    taken = walk_book(levels, quantity)
    fills = [
        VenueFill(
            trade_id=f"paper-{coid}-{n}",
            quantity=q,
            price=p,
            fee=quantize(p * q * taker_fee),
            fee_asset=rules.quote,
            ts_ms=ts_ms,
        )
        for n, (p, q) in enumerate(taken, start=1)
    ]
    filled = sum((f.quantity for f in fills), ZERO)
    cost = sum((f.quantity * f.price for f in fills), ZERO)
    return VenueOrder(
        client_order_id=coid,
        status="FILLED" if filled == quantity else "EXPIRED",
        quantity=quantity,
        filled=filled,
        venue_order_id=f"paper-{coid}",
        avg_price=cost / filled if filled > 0 else None,
        fills=fills,
        ts_ms=ts_ms,
        side=side,
        symbol=rules.symbol,
    )


def _effects(rules: MarketRules, side: Side, f: VenueFill) -> list[tuple[str, Decimal]]:
    """(asset, amount) one fill moves: base, quote, and the fee in its own asset (the ledger
    books the same, :data:`arb_state.ingest.SQL_FILL_EFFECTS`)."""
    sign = 1 if side == "buy" else -1
    return [(rules.base, sign * f.quantity), (rules.quote, -sign * f.quantity * f.price),
            (f.fee_asset or rules.quote, -f.fee)]


def _sum_fills(fills: Iterable[VenueFill]) -> tuple[Decimal, Decimal]:
    """(quantity, quote cost) of ``fills``."""
    qty = cost = ZERO
    for f in fills:
        qty += f.quantity
        cost += f.quantity * f.price
    return qty, cost


class PaperVenue:
    """Same interface as :class:`~arb_executor.venue_client.VenueClient`, never sends.

    ``balances`` are the start balances (asset -> amount; default :data:`DEFAULT_BALANCES`);
    ``latency_ms`` the simulated round trip; ``symbols`` the listed symbols (default: those of
    ``rules``, or any symbol when no rules are given, with ``default_rules``). ``mode`` is
    ``paper`` or ``shadow`` (both fill here; shadow's extras are wired by the executor).
    """

    def __init__(
        self,
        venue: str,
        books: BookCache,
        *,
        taker_fee: str = "0.001",
        rules: dict[str, MarketRules] | None = None,
        default_rules: tuple[str, str, str] = ("0.00001", "0.00001", "5"),
        clock: Clock = SYSTEM_CLOCK,
        maker_fee: str = "0.001",
        balances: Mapping[str, str | Decimal] | None = None,
        latency_ms: int = 0,
        book_stale_s: float = 5.0,
        symbols: Iterable[str] | None = None,
        mode: str = "paper",
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.venue = venue
        self.books = books
        self.taker_fee = D(taker_fee)
        self.maker_fee = D(maker_fee)  # for limit orders (not simulated yet)
        self._rules = dict(rules or {})
        self._default = default_rules
        self._listed: set[str] | None = (
            set(symbols) | set(self._rules) if symbols is not None else set(self._rules) or None)
        self.clock = clock
        self.latency_s = latency_ms / 1000.0
        self.book_stale_s = book_stale_s
        self.mode = mode
        self._sleep = sleep
        start = DEFAULT_BALANCES if balances is None else balances
        self.start_balances: dict[str, Decimal] = {a: D(v) for a, v in start.items()}
        self._free: dict[str, Decimal] = dict(self.start_balances)
        self.orders: dict[str, VenueOrder] = {}
        self._sending: set[str] = set()  # coids in flight (latency), refused as duplicates
        self._trades: set[str] = set()  # trade ids applied to the balances
        self._orphans: dict[str, list[tuple[str, Side, VenueFill]]] = {}  # fills before order
        # Fills rebuilt by the replay (booked here, their events not on the stream yet).
        self._unpublished: dict[str, tuple[MarketRules, Side, VenueFill]] = {}
        self.markets_loaded = True

    # ------------------------------------------------------------ venue interface
    def rules(self, symbol: str) -> MarketRules:
        if self._listed is not None and symbol not in self._listed:
            raise OrderRejected(f"{INVALID_SYMBOL} ({symbol} not listed on {self.venue})")
        r = self._rules.get(symbol)
        if r is None:
            step, min_qty, min_notional = self._default
            base, _, quote = symbol.partition("-")
            r = MarketRules(symbol, D(step), D(min_qty), D(min_notional), base, quote)
            self._rules[symbol] = r
        return r

    async def submit(self, symbol: str, side: Side, quantity: Decimal, coid: str) -> VenueOrder:
        rules = self.rules(symbol)
        duplicate = coid in self.orders or coid in self._sending
        if not duplicate:
            self._sending.add(coid)
        try:
            if self.latency_s > 0:
                await self._sleep(self.latency_s)
            if duplicate:  # like VenueClient: the caller queries the coid instead
                raise DuplicateOrder(DUPLICATE)
            return self._execute(rules, side, quantity, coid)  # no await: atomic
        finally:
            if not duplicate:
                self._sending.discard(coid)

    async def query(self, symbol: str, coid: str) -> VenueOrder | None:
        order = self.orders.get(coid)
        if order is None or (order.symbol and order.symbol != symbol):
            return None
        return order

    async def available(self, asset: str) -> Decimal:
        """Free balance of ``asset`` (0 for an asset never held)."""
        return self._free.get(asset, ZERO)

    def balances(self) -> dict[str, Decimal]:
        """Every asset's free balance (a copy)."""
        return dict(self._free)

    def set_balances(self, balances: Mapping[str, Decimal]) -> None:
        """Replace the balances (shadow: the live account's, read-only)."""
        self._free = {a: D(v) for a, v in balances.items()}

    def stream_balances(self) -> dict[str, Decimal]:
        """The free balances less the rebuilt fills whose events are not published yet: what
        the EXEC stream (and so the ledger) accounts for now; their events add the rest."""
        out = dict(self._free)
        for rules, side, f in self._unpublished.values():
            for asset, amount in _effects(rules, side, f):
                out[asset] = out.get(asset, ZERO) - amount
        return out

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------ filling
    def _fresh_book(self, symbol: str) -> Book:
        book = self.books.get(self.venue, symbol)
        age = self.books.age_s(self.venue, symbol)
        if book is None or age is None:
            raise OrderRejected(f"no book for {symbol} on {self.venue}")
        if age > self.book_stale_s:
            raise OrderRejected(f"no book for {symbol} on {self.venue} (last one {age:.1f} s "
                                f"old, limit {self.book_stale_s:g} s)")
        return book

    def _execute(self, rules: MarketRules, side: Side, quantity: Decimal,
                 coid: str) -> VenueOrder:
        check_lot_size(quantity, rules)
        order = fill_market_order(
            self._fresh_book(rules.symbol), side=side, quantity=quantity, coid=coid,
            rules=rules, taker_fee=self.taker_fee, ts_ms=self.clock.now_ms())
        self._check_funds(rules, side, quantity, order)
        for f in order.fills:
            self._trades.add(f.trade_id)
            self._book_fill(rules, side, f)
        self.orders[coid] = order
        logger.info("paper fill venue=%s symbol=%s client_order_id=%s side=%s status=%s "
                    "filled=%s avg_price=%s", self.venue, rules.symbol, coid, side,
                    order.status, order.filled, order.avg_price)
        return order

    def _check_funds(self, rules: MarketRules, side: Side, quantity: Decimal,
                     order: VenueOrder) -> None:
        if side == "buy":
            _, cost = _sum_fills(order.fills)
            asset, need = rules.quote, cost + sum((f.fee for f in order.fills), ZERO)
        else:
            asset, need = rules.base, quantity
        free = self._free.get(asset, ZERO)
        if need > free:
            raise OrderRejected(f"{INSUFFICIENT} ({asset}: need {need}, free {free})")

    def _book_fill(self, rules: MarketRules, side: Side, f: VenueFill) -> None:
        """Move the balances by one fill (fee in its own asset)."""
        for asset, amount in _effects(rules, side, f):
            self._add(asset, amount)

    def _add(self, asset: str, amount: Decimal) -> None:
        value = self._free.get(asset, ZERO) + amount
        self._free[asset] = value
        if value < 0:
            logger.error("paper balance negative venue=%s asset=%s balance=%s",
                         self.venue, asset, value)

    # ------------------------------------------------------------ rebuilt from EXEC events
    def _symbol_rules(self, symbol: str) -> MarketRules:
        try:
            return self.rules(symbol)
        except OrderRejected:  # an event of a symbol no longer listed still moved balances
            base, _, quote = symbol.partition("-")
            return MarketRules(symbol, ZERO, ZERO, ZERO, base, quote)

    def record_fill(self, ev: FillEvent) -> bool:
        """Apply a fill from the stream once (by trade id); False if already applied."""
        if ev.venue_trade_id in self._trades:
            self._unpublished.pop(ev.venue_trade_id, None)  # its event is on the stream now
            return False
        self._trades.add(ev.venue_trade_id)
        fill = VenueFill(ev.venue_trade_id, ev.quantity, ev.price, ev.fee, ev.fee_asset,
                         ev.ts // 1_000_000)
        self._book_fill(self._symbol_rules(ev.symbol), ev.side, fill)
        cur = self.orders.get(ev.client_order_id)
        if cur is None:
            self._orphans.setdefault(ev.client_order_id, []).append((ev.symbol, ev.side, fill))
        else:
            self.orders[ev.client_order_id] = replace(cur, fills=[*cur.fills, fill])
        return True

    def record_order(self, ev: OrderEvent) -> bool:
        """Take a venue-side order state from the stream; False if it tells nothing new.

        NEW / SUBMITTED / UNKNOWN / REJECTED mean the venue holds nothing for the coid (a fill
        computed but never published is forgotten: the redelivered intent fills anew)."""
        if ev.status not in _HELD:
            return False
        coid = ev.client_order_id
        cur = self.orders.get(coid)
        if cur is not None and (cur.status in _TERMINAL or ev.filled_quantity < cur.filled
                                or (ev.filled_quantity, ev.status) == (cur.filled, cur.status)):
            return False
        fills = cur.fills if cur is not None else [f for _, _, f in self._orphans.pop(coid, [])]
        self.orders[coid] = VenueOrder(
            client_order_id=coid, status=ev.status, quantity=ev.quantity,
            filled=ev.filled_quantity, venue_order_id=ev.venue_order_id or f"paper-{coid}",
            avg_price=ev.avg_price, fills=list(fills), ts_ms=ev.ts // 1_000_000, side=ev.side,
            symbol=ev.symbol)
        return True

    def finish_replay(self) -> None:
        """After the replay: make every order's fills add up to what its event says."""
        for coid, items in self._orphans.items():
            symbol, side, _ = items[0]
            fills = [f for _, _, f in items]
            qty, cost = _sum_fills(fills)
            logger.warning("paper replay: fills without an order event venue=%s "
                           "client_order_id=%s filled=%s; taken as FILLED",
                           self.venue, coid, qty)
            self.orders[coid] = VenueOrder(coid, "FILLED", qty, qty, f"paper-{coid}",
                                           cost / qty if qty > 0 else None, fills,
                                           fills[-1].ts_ms, side, symbol)
        self._orphans.clear()
        for coid, order in list(self.orders.items()):
            self._complete(coid, order)

    def _complete(self, coid: str, order: VenueOrder) -> None:
        qty, cost = _sum_fills(order.fills)
        missing = order.filled - qty
        if missing == 0:
            return
        if missing < 0 or order.avg_price is None or order.side is None:
            logger.error("paper replay: fills do not match the order venue=%s "
                         "client_order_id=%s filled=%s fills=%s", self.venue, coid,
                         order.filled, qty)
            return
        # Crash between the order event and its fills: the venue did fill them, so they are
        # rebuilt as one fill from the order's average price (then published by the leg).
        rules = self._symbol_rules(order.symbol)
        price = (order.avg_price * order.filled - cost) / missing
        fill = VenueFill(f"paper-{coid}-rest", missing, price,
                         quantize(price * missing * self.taker_fee), rules.quote, order.ts_ms)
        logger.warning("paper replay: rebuilt missing fills venue=%s client_order_id=%s "
                       "quantity=%s price=%s", self.venue, coid, missing, price)
        if fill.trade_id not in self._trades:
            self._trades.add(fill.trade_id)
            self._book_fill(rules, order.side, fill)
            self._unpublished[fill.trade_id] = (rules, order.side, fill)
        self.orders[coid] = replace(order, fills=[*order.fills, fill])
