"""Order matching, fills, fees and balances of one simulated venue.

* Taker orders (MARKET, and the crossing part of LIMIT) walk the venue's simulated book and
  consume its liquidity; the consumed levels go out as ordinary depth updates.
* The resting part of a GTC / LIMIT_MAKER order is not shown in the public book; it fills
  completely, as maker at its limit price, on the first tick where the opposite best price
  reaches it.
* Commission: ``ARB_SIM_FEE_ASSET=quote`` (default) charges every fee in the quote asset
  (USDT), buys and sells alike, so base quantities move by exactly the filled quantity;
  ``received`` charges it in the asset received (base for buys, quote for sells) like Binance
  without BNB. Fee = price * qty * rate (or qty * rate in base), rounded half-even to 8
  decimals, reported per fill as ``commission`` / ``commissionAsset``.
* Balances move exactly (Decimal); a buy needs ``cost + fee`` free (the resting part locks
  ``qty * price`` plus the worst-case fee), a sell needs the base quantity free.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal

from arb_common.clock import SYSTEM_CLOCK, Clock
from arb_common.money import ZERO, floor_to_step, quantize

from .accounts import Account
from .book import DepthEvent, Level
from .config import SymbolSpec
from .market import Market
from .metrics import ORDERS, REJECTS, TRADES
from .orders import BinanceError, Order, Trade

logger = logging.getLogger(__name__)

INSUFFICIENT = "Account has insufficient balance for requested action."


@dataclass
class OrderRequest:
    symbol: str  # wire form
    side: str  # BUY / SELL
    type: str  # MARKET / LIMIT / LIMIT_MAKER
    time_in_force: str = "GTC"
    quantity: Decimal | None = None
    quote_qty: Decimal | None = None
    price: Decimal | None = None
    client_order_id: str | None = None
    external: bool = False
    fill_ratio: Decimal | None = None  # partial_fill fault: a MARKET order fills this share


class Engine:
    def __init__(self, venue: str, market: Market, start_balances: dict[str, Decimal], *,
                 taker_fee: Decimal, maker_fee: Decimal, fee_asset: str = "quote",
                 clock: Clock = SYSTEM_CLOCK,
                 publish: Callable[[DepthEvent], None] | None = None,
                 id_base: int | None = None) -> None:
        self.venue = venue
        self.market = market
        self.account = Account(start_balances)
        self.taker_fee = taker_fee
        self.maker_fee = maker_fee
        self.fee_asset = fee_asset
        self.clock = clock
        self.publish = publish or (lambda event: None)
        base = id_base if id_base is not None else clock.now_ms() * 1000
        self._next_order_id = base
        self._next_trade_id = base
        self.records: list[Order] = []  # every order received, rejected ones included
        self.orders: dict[int, Order] = {}
        # Orders that may still be open (pruned as they close): every tick and every new
        # order looks at the open ones, which must not cost more as the history grows.
        self._maybe_open: dict[int, Order] = {}
        self.by_client: dict[tuple[str, str], Order] = {}  # (symbol, client id) -> latest
        self.trades: list[Trade] = []

    # ------------------------------------------------------------------ queries
    def open_orders(self, symbol: str | None = None) -> list[Order]:
        out: list[Order] = []
        for order_id, o in list(self._maybe_open.items()):
            if not o.is_open:
                del self._maybe_open[order_id]
            elif symbol is None or o.symbol == symbol:
                out.append(o)
        return out

    def find(self, symbol: str, order_id: int | None, client_id: str | None) -> Order | None:
        if order_id is not None:
            order = self.orders.get(order_id)
            if order is None or order.symbol != symbol:
                return None
            if client_id is not None and order.client_order_id != client_id:
                raise BinanceError(-2039, "Client order ID is not correct for this order ID.")
            return order
        if client_id is not None:
            return self.by_client.get((symbol, client_id))
        return None

    # ------------------------------------------------------------------ placing
    def place(self, req: OrderRequest) -> Order:
        """Validate, match and book an order; rejections raise ``BinanceError`` and are
        kept in ``records`` with status REJECTED."""
        try:
            order = self._place(req)
        except BinanceError as exc:
            self.record_reject(req, exc)
            raise
        self.account.check()
        return order

    def record_reject(self, req: OrderRequest, exc: BinanceError) -> None:
        spec = self.market.by_wire.get(req.symbol)
        now = self.clock.now_ms()
        self.records.append(Order(
            order_id=None, client_order_id=req.client_order_id or "", symbol=req.symbol,
            pair=spec.symbol if spec else req.symbol, side=req.side, type=req.type,
            time_in_force=req.time_in_force, price=req.price or ZERO,
            orig_qty=req.quantity or ZERO, orig_quote_qty=req.quote_qty or ZERO, time=now,
            update_time=now, status="REJECTED", external=req.external, reject_reason=exc.msg))
        ORDERS.labels(self.venue, "REJECTED").inc()
        REJECTS.labels(self.venue, exc.reason).inc()
        exc.counted = True
        logger.info("order rejected venue=%s symbol=%s client_order_id=%s reason=%r",
                    self.venue, req.symbol, req.client_order_id, exc.msg)

    def _place(self, req: OrderRequest) -> Order:
        spec = self.market.by_wire[req.symbol]
        if req.client_order_id:
            dup = [o for o in self.open_orders() if o.client_order_id == req.client_order_id]
            if dup:
                raise BinanceError(-2010, "Duplicate order sent.", reason="duplicate")
        check_filters(spec, req, self._reference_price(spec, req))
        capped = _capped(spec, req)
        fills, exhausted = self._walk(spec, req, capped)
        exhausted = exhausted or capped is not None  # partial_fill: the rest expires
        qty_filled = sum((q for _, q in fills), ZERO)
        if req.type == "LIMIT_MAKER" and fills:
            raise BinanceError(-2010, "Order would immediately match and take.",
                               reason="would_take")
        if req.time_in_force == "FOK" and req.quantity is not None and qty_filled < req.quantity:
            fills = []  # expires without touching the book
        rests = req.type != "MARKET" and req.time_in_force == "GTC"
        rest_qty = (req.quantity or ZERO) - qty_filled if rests else ZERO
        self._check_balance(spec, req, fills, rest_qty)
        order = self._new_order(spec, req)
        self._execute(spec, order, fills, is_maker=False)
        order.status = _taker_status(req, order, exhausted, rest_qty)
        if order.is_open and rest_qty > 0:
            self._lock_rest(spec, order, rest_qty)
        ORDERS.labels(self.venue, order.status).inc()
        logger.info("order venue=%s symbol=%s client_order_id=%s side=%s type=%s status=%s "
                    "executed=%s", self.venue, spec.symbol, order.client_order_id, order.side,
                    order.type, order.status, order.executed_qty)
        return order

    def _reference_price(self, spec: SymbolSpec, req: OrderRequest) -> Decimal:
        if req.price is not None:
            return req.price
        book = self.market.book(self.venue, spec.wire)
        best = book.best("asks" if req.side == "BUY" else "bids")
        return best[0] if best else spec.start_price

    def _walk(self, spec: SymbolSpec, req: OrderRequest,
              capped: tuple[Decimal | None, Decimal | None] | None = None,
              ) -> tuple[list[Level], bool]:
        """Taker fills against the book (not applied yet); ``exhausted``: ran out of book.
        ``capped``: (quantity, quote quantity) to walk instead of the order's own."""
        book = self.market.book(self.venue, spec.wire)
        side = "asks" if req.side == "BUY" else "bids"
        limit = None if req.type == "MARKET" else req.price
        fills: list[Level] = []
        left_qty, left_quote = capped if capped is not None else (req.quantity, req.quote_qty)
        if capped is not None and not (left_qty or left_quote):
            return fills, True
        for price, avail in book.levels(side):
            if limit is not None and (price > limit if req.side == "BUY" else price < limit):
                return fills, False
            if left_qty is not None:
                take = min(avail, left_qty)
            else:
                take = min(avail, floor_to_step((left_quote or ZERO) / price, spec.step_size))
            if take <= 0:
                return fills, False
            fills.append((price, take))
            if left_qty is not None:
                left_qty -= take
                if left_qty == 0:
                    return fills, False
            else:
                left_quote = (left_quote or ZERO) - take * price
        return fills, True

    def _fee(self, spec: SymbolSpec, side: str, price: Decimal, qty: Decimal,
             rate: Decimal) -> tuple[Decimal, str]:
        if self.fee_asset == "received" and side == "BUY":
            return quantize(qty * rate, 8), spec.base
        return quantize(price * qty * rate, 8), spec.quote

    def _lock_amount(self, spec: SymbolSpec, side: str, price: Decimal,
                     qty: Decimal) -> tuple[str, Decimal]:
        if side == "SELL":
            return spec.base, qty
        cost = price * qty
        if self.fee_asset == "received":
            return spec.quote, cost
        worst = max(self.taker_fee, self.maker_fee)
        return spec.quote, cost + (cost * worst).quantize(Decimal("1e-8"), rounding=ROUND_UP)

    def _check_balance(self, spec: SymbolSpec, req: OrderRequest, fills: list[Level],
                       rest_qty: Decimal) -> None:
        need: dict[str, Decimal] = {}
        for price, qty in fills:
            if req.side == "BUY":
                need[spec.quote] = need.get(spec.quote, ZERO) + price * qty
                fee, asset = self._fee(spec, "BUY", price, qty, self.taker_fee)
                if asset == spec.quote:
                    need[spec.quote] += fee
            else:
                need[spec.base] = need.get(spec.base, ZERO) + qty
        if rest_qty > 0 and req.price is not None:
            asset, amount = self._lock_amount(spec, req.side, req.price, rest_qty)
            need[asset] = need.get(asset, ZERO) + amount
        if req.side == "SELL" and req.quantity is not None:  # the whole order must be covered
            need[spec.base] = max(need.get(spec.base, ZERO), req.quantity)
        for asset, amount in need.items():
            if amount > self.account.free(asset):
                raise BinanceError(-2010, INSUFFICIENT, reason="insufficient_balance")

    def _new_order(self, spec: SymbolSpec, req: OrderRequest) -> Order:
        now = self.clock.now_ms()
        order_id = self._next_order_id
        self._next_order_id += 1
        client_id = req.client_order_id or ("sim" + secrets.token_hex(10))
        order = Order(
            order_id=order_id, client_order_id=client_id, symbol=spec.wire, pair=spec.symbol,
            side=req.side, type=req.type, time_in_force=req.time_in_force,
            price=req.price if req.price is not None else ZERO,
            orig_qty=req.quantity if req.quantity is not None else ZERO,
            orig_quote_qty=req.quote_qty if req.quote_qty is not None else ZERO,
            time=now, update_time=now, external=req.external)
        self.orders[order_id] = order
        self._maybe_open[order_id] = order
        self.by_client[(spec.wire, client_id)] = order
        self.records.append(order)
        return order

    def _execute(self, spec: SymbolSpec, order: Order, fills: list[Level], *,
                 is_maker: bool) -> None:
        """Book the trades of ``fills`` on the account (taker fills also leave the book)."""
        if not fills:
            return
        if not is_maker:
            side = "asks" if order.side == "BUY" else "bids"
            event = self.market.book(self.venue, spec.wire).take(side, fills)
            if event is not None:
                self.publish(event)
        rate = self.maker_fee if is_maker else self.taker_fee
        now = self.clock.now_ms()
        for price, qty in fills:
            fee, fee_asset = self._fee(spec, order.side, price, qty, rate)
            trade = Trade(trade_id=self._next_trade_id, order_id=order.order_id or 0,
                          symbol=spec.wire, side=order.side, price=price, qty=qty,
                          commission=fee, commission_asset=fee_asset, time=now,
                          is_maker=is_maker)
            self._next_trade_id += 1
            self._settle(spec, order, trade)
            order.add_fill(trade)
            self.trades.append(trade)
            TRADES.labels(self.venue, spec.symbol).inc()
        order.update_time = now
        self.account.update_time = now

    def _settle(self, spec: SymbolSpec, order: Order, trade: Trade) -> None:
        acct = self.account
        cost = trade.quote_qty
        if order.side == "BUY":
            if trade.is_maker:  # paid from the locked amount
                acct.spend_locked(spec.quote, cost)
                order.locked -= cost
            else:
                acct.debit(spec.quote, cost)
            acct.credit(spec.base, trade.qty)
        else:
            if trade.is_maker:
                acct.spend_locked(spec.base, trade.qty)
                order.locked -= trade.qty
            else:
                acct.debit(spec.base, trade.qty)
            acct.credit(spec.quote, cost)
        acct.debit(trade.commission_asset, trade.commission)

    def _lock_rest(self, spec: SymbolSpec, order: Order, rest_qty: Decimal) -> None:
        asset, amount = self._lock_amount(spec, order.side, order.price, rest_qty)
        self.account.lock(asset, amount)
        order.locked_asset, order.locked = asset, amount

    def _release(self, order: Order) -> None:
        if order.locked and order.locked_asset:
            self.account.unlock(order.locked_asset, order.locked)
        order.locked = ZERO

    # ------------------------------------------------------------------ later events
    def cancel(self, order: Order) -> Order:
        if not order.is_open:
            raise BinanceError(-2011, "Unknown order sent.", reason="cancel_unknown")
        self._release(order)
        order.status = "CANCELED"
        order.update_time = self.clock.now_ms()
        ORDERS.labels(self.venue, "CANCELED").inc()
        self.account.check()
        return order

    def on_book_moved(self, wire: str) -> None:
        """Fill resting orders the market has moved through (maker fills)."""
        book = self.market.book(self.venue, wire)
        spec = self.market.by_wire[wire]
        for order in self.open_orders(wire):
            best = book.best("asks" if order.side == "BUY" else "bids")
            if best is None:
                continue
            crossed = best[0] <= order.price if order.side == "BUY" else best[0] >= order.price
            if not crossed:
                continue
            self._execute(spec, order, [(order.price, order.remaining)], is_maker=True)
            if order.side == "BUY":
                self.account.unlock(spec.quote, order.locked)  # worst-case fee not spent
            order.locked = ZERO
            order.status = "FILLED"
            ORDERS.labels(self.venue, "FILLED").inc()
            self.account.check()


def _taker_status(req: OrderRequest, order: Order, exhausted: bool, rest_qty: Decimal) -> str:
    if req.type == "MARKET" and req.quote_qty is not None:
        return "FILLED" if order.executed_qty > 0 and not exhausted else "EXPIRED"
    if order.executed_qty == order.orig_qty:
        return "FILLED"
    if rest_qty > 0:
        return "PARTIALLY_FILLED" if order.executed_qty > 0 else "NEW"
    return "EXPIRED"


def _capped(spec: SymbolSpec, req: OrderRequest) -> tuple[Decimal | None, Decimal | None] | None:
    """(quantity, quote quantity) a MARKET order may fill under the partial_fill fault: the
    share rounded down to the step, at least one step, at most quantity - one step."""
    ratio = req.fill_ratio
    if ratio is None or req.type != "MARKET":
        return None
    if req.quantity is not None:
        step = spec.step_size
        if req.quantity < 2 * step:
            return ZERO, None
        part = floor_to_step(req.quantity * ratio, step)
        return min(max(part, step), req.quantity - step), None
    return None, (req.quote_qty or ZERO) * ratio


def check_filters(spec: SymbolSpec, req: OrderRequest, ref_price: Decimal) -> None:
    """PRICE_FILTER, LOT_SIZE and NOTIONAL as published in exchangeInfo."""
    if req.price is not None:
        if (req.price < spec.tick_size or req.price > Decimal("10000000")
                or req.price % spec.tick_size != 0):
            raise BinanceError(-1013, "Filter failure: PRICE_FILTER", reason="PRICE_FILTER")
    if req.quantity is not None:
        q = req.quantity
        if q < spec.min_qty or q > spec.max_qty or q % spec.step_size != 0:
            raise BinanceError(-1013, "Filter failure: LOT_SIZE", reason="LOT_SIZE")
        notional = q * ref_price
    else:
        notional = req.quote_qty or ZERO
    if notional < spec.min_notional or (req.type != "MARKET" and notional > spec.max_notional):
        raise BinanceError(-1013, "Filter failure: NOTIONAL", reason="NOTIONAL")
