"""Decision engine: books in, intents out. No I/O, time from the injected clock, so backtest
and live run the same code.

Per symbol: ``flat`` → (best executable net spread ≥ ``min_spread_bps``, trading enabled, not
cooling down, RiskGuard allows) → ``open`` → (reverse executable spread ≥ ``close_spread_bps``,
or held ≥ ``max_hold_s``) → ``flat`` with a cooldown. Closes run even when trading is disabled.

A close whose hedge had to fail over (the executor evened its legs on the other venue, undoing
that venue's close instead) leaves the trade's two positions in place: delta neutral, but
capital tied up and the round trip's PnL not complete. Once the close's legs and hedges are
all terminal and even, :meth:`Engine.on_order` knows what it really took off
(:func:`close_filled`); what is left is the trade again, closed by the next close intent
(``<trade_id>:<n>:close``, :func:`close_intent_id`), at most ``max_closes`` times — unless a
new trade of the symbol is open by then (the cooldown normally outlasts the executor's
hedging: logged as an error, the leftover is left to the operator).

Memory: :meth:`Engine.get_state` / :meth:`Engine.restore_state` round-trip the per-symbol
trade state exactly (not the books: they are stale after a restart anyway), and
:meth:`Engine.reconcile_intent` re-applies a decision found on the bus (the last intent of a
symbol, newer than the snapshot). Every time derived from a decision (open time, cooldown
end) is computed from the decision's timestamp (``Decision.ts``, stamped on the intent's
envelope), so a restart recomputes exactly the same values.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any

from arb_common.clock import Clock
from arb_common.messages import Book, Intent, OrderEvent
from arb_common.money import D, quantize

from .risk_guard import RiskGuard
from .spread import Quote, best_bound_bps, best_quote, quote, top_bound_bps

logger = logging.getLogger(__name__)

NS = 1_000_000_000
TERMINAL = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})


@dataclass(frozen=True)
class EngineConfig:
    order_qty: Mapping[str, Decimal]
    session: str
    min_spread_bps: Decimal = Decimal("5")
    close_spread_bps: Decimal = Decimal("-20")
    max_hold_s: float = 120.0
    cooldown_s: float = 30.0
    book_stale_s: float = 2.0
    # A book that cannot change the decision (the top-of-book bound misses the threshold)
    # skips the depth walk; the best spread (a gauge) is still walked this often per symbol.
    spread_sample_s: float = 0.25
    max_closes: int = 3  # close intents per trade (the first + re-closes of a leftover)


@dataclass(frozen=True)
class OpenTrade:
    trade_id: str
    buy_venue: str
    sell_venue: str
    quantity: Decimal
    entry_spread_bps: Decimal
    buy_price: Decimal
    sell_price: Decimal
    opened_ns: int
    closes: int = 0  # close intents sent for it so far


@dataclass
class SymbolState:
    books: dict[str, Book] = field(default_factory=dict)
    trade: OpenTrade | None = None
    cooldown_until_ns: int = 0
    closing: OpenTrade | None = None  # the trade the last close intent was for (abort undoes)
    open_legs: dict[str, Decimal] = field(default_factory=dict)  # side -> filled (terminal)
    spread_at_ns: int = 0  # when the best spread was last walked (for the gauge)
    exiting: OpenTrade | None = None  # closed by its last close intent, outcome not known yet
    exit_legs: dict[str, Decimal] = field(default_factory=dict)  # that close's, as open_legs


@dataclass(frozen=True)
class RiskBlock:
    symbol: str
    kind: str
    detail: str


@dataclass
class Decision:
    intents: list[Intent] = field(default_factory=list)
    blocks: list[RiskBlock] = field(default_factory=list)
    spread_bps: Decimal | None = None  # best net open spread seen on this book
    ts: int = 0  # when it was decided (ns): the intents' envelope time


def open_filled(trade: OpenTrade, legs: Mapping[str, Decimal]) -> tuple[Decimal, bool]:
    """(quantity the open really holds on both venues, whether its fills are even).

    ``legs``: ``buy`` / ``sell`` -> the open legs' filled quantities, and
    ``hedge:<venue>:<side>:<coid>`` -> a hedge order's. A hedge on the buy venue adds to
    (buy) or takes from (sell) the long side, one on the sell venue to the short side."""
    long = legs.get("buy", Decimal(0))
    short = legs.get("sell", Decimal(0))
    for key, qty in legs.items():
        if not key.startswith("hedge:"):
            continue
        _, venue, side, _ = key.split(":", 3)
        signed = qty if side == "buy" else -qty
        if venue == trade.buy_venue:
            long += signed
        elif venue == trade.sell_venue:
            short -= signed
    return max(Decimal(0), min(long, short)), long == short


def close_filled(trade: OpenTrade, legs: Mapping[str, Decimal]) -> tuple[Decimal, bool]:
    """(quantity a close of ``trade`` took off both venues, whether its fills are even):
    :func:`open_filled` of the close, which buys on the trade's sell venue and sells on its
    buy venue. A hedge that completed on the short leg's venue counts; one that failed over
    to the other venue undid that venue's close."""
    return open_filled(replace(trade, buy_venue=trade.sell_venue,
                               sell_venue=trade.buy_venue), legs)


def close_intent_id(trade_id: str, attempt: int) -> str:
    """``<trade_id>:close``, then ``<trade_id>:<n>:close`` for the n-th close of a leftover
    (still ending in ``:close``: its fills are the round trip's closing fills)."""
    return f"{trade_id}:close" if attempt <= 1 else f"{trade_id}:{attempt}:close"


def _legs_key(ev: OrderEvent) -> str:
    return ev.side if ev.role == "leg" else f"hedge:{ev.venue}:{ev.side}:{ev.client_order_id}"


def trade_id_for(session: str, symbol: str, q: Quote) -> str:
    key = f"{session}|{symbol}|{q.buy_venue}:{q.buy_seq}|{q.sell_venue}:{q.sell_seq}"
    return f"{symbol}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


class Engine:
    def __init__(self, cfg: EngineConfig, fees: Mapping[str, Decimal], guard: RiskGuard,
                 clock: Clock, *, trading_enabled: bool = True) -> None:
        self.cfg = cfg
        self.fees = dict(fees)
        self.guard = guard
        self.clock = clock
        self.trading_enabled = trading_enabled
        self.symbols: dict[str, SymbolState] = {s: SymbolState() for s in cfg.order_qty}
        # venue -> gate open (sys.ready); None = do not gate (backtest, unit tests)
        self.venue_ready: dict[str, bool] | None = None

    # ------------------------------------------------------------ input
    def remember(self, book: Book) -> SymbolState | None:
        """Keep ``book`` as its venue's latest (without deciding); None if it is not used."""
        st = self.symbols.get(book.symbol)
        if st is None or book.venue not in self.fees:
            return None
        prev = st.books.get(book.venue)
        if prev is not None and book.recv_ts < prev.recv_ts:
            return None  # out of order: keep the newer book
        st.books[book.venue] = book
        return st

    def drop_bad_books(self, symbol: str) -> list[str]:
        """Forget the symbol's books whose levels do not decode (a :class:`LazyBook` read
        lazily); returns their venues."""
        st = self.symbols.get(symbol)
        bad: list[str] = []
        for venue, book in list(st.books.items()) if st is not None else []:
            try:
                book.bids, book.asks  # noqa: B018 - decoding is the check
            except ValueError:
                bad.append(venue)
                del st.books[venue]  # type: ignore[union-attr]
        return bad

    def on_book(self, book: Book) -> Decision:
        st = self.remember(book)
        if st is None:
            return Decision()
        now = self.clock.now_ns()
        fresh = self.fresh_books(book.symbol, now)
        if st.trade is not None:
            out = self._maybe_close(book.symbol, st, fresh, now)
        else:
            out = self._maybe_open(book.symbol, st, fresh, now)
        out.ts = now
        return out

    def spread_bps(self, symbol: str) -> Decimal | None:
        """Best net open spread over the fresh books (no decision)."""
        best = best_quote(self.fresh_books(symbol), self.cfg.order_qty[symbol], self.fees)
        return best.net_bps if best else None

    def fresh_books(self, symbol: str, now: int | None = None) -> dict[str, Book]:
        now = self.clock.now_ns() if now is None else now
        limit = int(self.cfg.book_stale_s * NS)
        return {v: b for v, b in self.symbols[symbol].books.items()
                if b.recv_ts > 0 and now - b.recv_ts <= limit}

    def on_order(self, ev: OrderEvent, at_ns: int | None = None) -> None:
        """Learn how the open of the current trade ended, so a close never trades more than
        the open really filled, and an open that filled nothing returns the symbol to flat
        (cooling down from ``at_ns``, the event's time, default now). Hedge orders of the
        open (``role="hedge"``) count on the venue they traded on (:func:`open_filled`)."""
        st = self.symbols.get(ev.symbol)
        if st is not None and st.exiting is not None and ev.status in TERMINAL \
                and ev.intent_id == close_intent_id(st.exiting.trade_id, st.exiting.closes):
            self._on_close_order(ev, st, st.exiting)
            return
        trade = st.trade if st is not None else None
        if st is None or trade is None or ev.trade_id != trade.trade_id or trade.closes:
            return  # (a leftover of a close: its open was settled long ago)
        if not ev.intent_id.endswith(":open") or ev.status not in TERMINAL:
            return
        key = _legs_key(ev)
        st.open_legs[key] = ev.filled_quantity
        if "buy" not in st.open_legs or "sell" not in st.open_legs:
            return
        filled, even = open_filled(trade, st.open_legs)
        if not even:
            # The executor is hedging the difference (its hedge orders follow): hold what is
            # matched so far and decide nothing until the legs are even again.
            if filled != trade.quantity:
                st.trade = OpenTrade(**{**trade.__dict__, "quantity": filled})
            return
        if filled == 0:
            logger.warning("open filled nothing symbol=%s trade_id=%s; back to flat",
                           ev.symbol, trade.trade_id)
            st.trade = None
            now = self.clock.now_ns() if at_ns is None else at_ns
            st.cooldown_until_ns = now + int(self.cfg.cooldown_s * NS)
        elif filled != trade.quantity:
            logger.warning("open filled partially symbol=%s trade_id=%s filled=%s legs=%s",
                           ev.symbol, trade.trade_id, filled, st.open_legs)
            st.trade = OpenTrade(**{**trade.__dict__, "quantity": filled})

    def _on_close_order(self, ev: OrderEvent, st: SymbolState, trade: OpenTrade) -> None:
        """A leg or hedge of the last close ended: once they are all known and even, what
        the close did not take off is the trade again (closed by the next close intent)."""
        st.exit_legs[_legs_key(ev)] = ev.filled_quantity
        if "buy" not in st.exit_legs or "sell" not in st.exit_legs:
            return
        closed, even = close_filled(trade, st.exit_legs)
        if not even:
            return  # the executor is hedging the difference: its hedge orders follow
        legs, st.exiting, st.exit_legs = st.exit_legs, None, {}
        left = trade.quantity - closed
        if left <= 0:
            return
        if st.trade is not None or trade.closes >= self.cfg.max_closes:
            logger.error("close left a position open symbol=%s trade_id=%s left=%s closes=%d "
                         "legs=%s; not closed again (%s)", ev.symbol, trade.trade_id, left,
                         trade.closes, legs, "another trade is open" if st.trade else
                         f"max_closes={self.cfg.max_closes}")
            return
        logger.warning("close left a position on both venues symbol=%s trade_id=%s left=%s "
                       "legs=%s; closing it again", ev.symbol, trade.trade_id, left, legs)
        st.trade, st.open_legs = replace(trade, quantity=left), {}

    def set_venue_ready(self, venue: str, ready: bool) -> None:
        if self.venue_ready is None:
            self.venue_ready = {}
        self.venue_ready[venue] = ready

    def _gate_open(self, *venues: str) -> bool:
        return self.venue_ready is None or all(self.venue_ready.get(v, False) for v in venues)

    def abort(self, intent: Intent, *, retry_after_s: float = 1.0) -> None:
        """The intent could not be published: undo the state change it made. A failed open
        waits ``retry_after_s`` before trying again; a failed close is retried on the next
        book with the same intent id."""
        st = self.symbols[intent.symbol]
        if intent.action == "open" and st.trade and st.trade.trade_id == intent.trade_id:
            st.trade = None
            st.cooldown_until_ns = self.clock.now_ns() + int(retry_after_s * NS)
        elif (intent.action == "close" and st.trade is None and st.closing is not None
              and st.closing.trade_id == intent.trade_id):
            st.trade, st.closing, st.exiting = st.closing, None, None
            st.cooldown_until_ns = 0

    # ------------------------------------------------------------ open
    def _sampled_spread(self, symbol: str, st: SymbolState, fresh: dict[str, Book],
                        now: int) -> Decision:
        """No decision on this book; the best spread walked if the gauge is due."""
        if now - st.spread_at_ns < self.cfg.spread_sample_s * NS:
            return Decision()
        return self._walk(symbol, st, fresh, now)[1]

    def _walk(self, symbol: str, st: SymbolState, fresh: dict[str, Book],
              now: int) -> tuple[Quote | None, Decision]:
        """The best open quote walked through depth, and a Decision showing its spread."""
        best = best_quote(fresh, self.cfg.order_qty[symbol], self.fees)
        if best is None:
            return None, Decision()
        st.spread_at_ns = now
        return best, Decision(spread_bps=best.net_bps)

    def _maybe_open(self, symbol: str, st: SymbolState, fresh: dict[str, Book],
                    now: int) -> Decision:
        bound = best_bound_bps(fresh, self.fees)
        if bound is None or bound < self.cfg.min_spread_bps:
            # Even the top of the books misses the threshold: walking depth cannot reach it.
            return self._sampled_spread(symbol, st, fresh, now)
        best, out = self._walk(symbol, st, fresh, now)
        if best is None or best.net_bps < self.cfg.min_spread_bps:
            return out
        if not self.trading_enabled or now < st.cooldown_until_ns:
            return out
        if not self._gate_open(best.buy_venue, best.sell_venue):
            return out  # the executor would hold it until the reconciler opens the gate
        ok, reason = self.guard.allow_open(symbol, best.quantity * best.buy_price)
        if not ok:
            out.blocks.append(RiskBlock(symbol, reason.split(":", 1)[0], reason))
            return out
        trade_id = trade_id_for(self.cfg.session, symbol, best)
        intent = self._intent(symbol, trade_id, "open", best, "spread")
        st.open_legs, st.closing = {}, None
        # The trade holds what its intent says (same rounding), so a restart that finds
        # only the intent rebuilds it exactly (reconcile_intent).
        st.trade = _open_trade(intent, now)
        out.intents.append(intent)
        logger.info("open symbol=%s trade_id=%s buy=%s sell=%s net_bps=%.2f", symbol, trade_id,
                    best.buy_venue, best.sell_venue, best.net_bps)
        return out

    # ------------------------------------------------------------ close
    def _maybe_close(self, symbol: str, st: SymbolState, fresh: dict[str, Book],
                     now: int) -> Decision:
        trade = st.trade
        assert trade is not None
        if trade.quantity == 0:  # legs uneven, nothing matched yet: wait for the hedge
            if (now - trade.opened_ns) / NS >= self.cfg.max_hold_s:
                logger.warning("open never matched symbol=%s trade_id=%s; flat",
                               symbol, trade.trade_id)
                st.trade, st.open_legs = None, {}
                st.cooldown_until_ns = now + int(self.cfg.cooldown_s * NS)
            return Decision()
        held_s = (now - trade.opened_ns) / NS
        if held_s < self.cfg.max_hold_s:
            exit_bound = self._exit_bound(trade, fresh)
            if exit_bound is None or exit_bound < self.cfg.close_spread_bps:
                # No exit quote can revert (or none exists) and it is not time yet.
                return self._sampled_spread(symbol, st, fresh, now)
        out = self._walk(symbol, st, fresh, now)[1]
        exit_q = self._exit_quote(trade, fresh)
        if exit_q is not None and exit_q.net_bps >= self.cfg.close_spread_bps:
            reason = "reverted"
        elif held_s >= self.cfg.max_hold_s:
            reason = "max_hold"
            # Exit even without fresh prices: last known books, else the entry prices.
            exit_q = exit_q or self._exit_quote(trade, st.books) or self._entry_reversed(trade)
        else:
            return out
        st.trade, st.closing = None, trade
        st.exiting, st.exit_legs = replace(trade, closes=trade.closes + 1), {}
        st.cooldown_until_ns = now + int(self.cfg.cooldown_s * NS)
        out.intents.append(self._intent(symbol, trade.trade_id, "close", exit_q, reason,
                                        attempt=trade.closes + 1))
        logger.info("close symbol=%s trade_id=%s reason=%s exit_bps=%.2f held_s=%.1f", symbol,
                    trade.trade_id, reason, exit_q.net_bps, held_s)
        return out

    def _exit_bound(self, trade: OpenTrade, books: Mapping[str, Book]) -> Decimal | None:
        buy_book = books.get(trade.sell_venue)
        sell_book = books.get(trade.buy_venue)
        if buy_book is None or sell_book is None:
            return None
        return top_bound_bps(buy_book, sell_book, self.fees)

    def _exit_quote(self, trade: OpenTrade, books: Mapping[str, Book]) -> Quote | None:
        """Buy back on the venue we sold, sell on the venue we bought."""
        buy_book = books.get(trade.sell_venue)
        sell_book = books.get(trade.buy_venue)
        if buy_book is None or sell_book is None:
            return None
        return quote(buy_book, sell_book, trade.quantity, self.fees)

    def _entry_reversed(self, trade: OpenTrade) -> Quote:
        return Quote(
            buy_venue=trade.sell_venue, sell_venue=trade.buy_venue, quantity=trade.quantity,
            buy_price=trade.sell_price, sell_price=trade.buy_price, net_bps=Decimal(0),
            buy_seq=0, sell_seq=0, origin_ts=self.clock.now_ns(),
        )

    def _intent(self, symbol: str, trade_id: str, action: str, q: Quote, reason: str, *,
                attempt: int = 1) -> Intent:
        return Intent(
            intent_id=f"{trade_id}:open" if action == "open" else close_intent_id(trade_id,
                                                                                   attempt),
            trade_id=trade_id,
            symbol=symbol,
            action="open" if action == "open" else "close",
            buy_venue=q.buy_venue,
            sell_venue=q.sell_venue,
            quantity=q.quantity,
            buy_price=quantize(q.buy_price, 8),
            sell_price=quantize(q.sell_price, 8),
            net_spread_bps=quantize(q.net_bps, 4),
            reason=reason,
            origin_ts=q.origin_ts,
        )

    # ------------------------------------------------------------ views
    def open_trades(self) -> dict[str, OpenTrade]:
        return {s: st.trade for s, st in self.symbols.items() if st.trade is not None}

    # ------------------------------------------------------------ memory
    def published(self, intent: Intent) -> None:
        """``intent`` is on the bus: a close can no longer be undone by :meth:`abort`."""
        st = self.symbols.get(intent.symbol)
        if (intent.action == "close" and st is not None and st.closing is not None
                and st.closing.trade_id == intent.trade_id):
            st.closing = None

    def get_state(self) -> dict[str, Any]:
        """Per-symbol trade state (JSON-ready, Decimals as strings), symbols with nothing to
        remember left out; books are not state."""
        items = sorted(self.symbols.items())
        return {
            "v": 1,
            "open": {s: _trade_dict(st.trade) for s, st in items if st.trade},
            "closing": {s: _trade_dict(st.closing) for s, st in items if st.closing},
            "cooldown_until": {s: st.cooldown_until_ns for s, st in items
                               if st.cooldown_until_ns},
            # Only meaningful while a trade is open (they are the outcome of its open legs).
            "open_legs": {s: {side: str(q) for side, q in sorted(st.open_legs.items())}
                          for s, st in items if st.trade and st.open_legs},
            # A close whose outcome is not known yet: the trade and its legs so far.
            "exiting": {s: {**_trade_dict(st.exiting),
                            "legs": {k: str(q) for k, q in sorted(st.exit_legs.items())}}
                        for s, st in items if st.exiting},
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        if state.get("v") != 1:
            raise ValueError(f"unsupported engine state version {state.get('v')!r}")
        known = set(self.symbols)
        for part in ("open", "closing", "cooldown_until", "open_legs", "exiting"):
            for symbol in set(state.get(part, {})) - known:
                logger.warning("engine %s state of a symbol not traded any more symbol=%s",
                               part, symbol)
        for symbol, st in self.symbols.items():
            st.trade = _trade(state.get("open", {}).get(symbol))
            st.closing = _trade(state.get("closing", {}).get(symbol))
            st.cooldown_until_ns = int(state.get("cooldown_until", {}).get(symbol, 0))
            legs = state.get("open_legs", {}).get(symbol, {})
            st.open_legs = {side: D(q) for side, q in legs.items()}
            exiting = state.get("exiting", {}).get(symbol)
            st.exiting = _trade(exiting)
            st.exit_legs = {k: D(q) for k, q in exiting["legs"].items()} if exiting else {}

    def reconcile_intent(self, intent: Intent, ts: int) -> bool:
        """Apply a decision published at ``ts`` that the restored state may not know (the last
        intent of the symbol, newer than the snapshot). Idempotent; True if it changed
        anything. Open → that trade is open; close → flat, cooling down from ``ts``."""
        st = self.symbols.get(intent.symbol)
        if st is None:
            return False
        if intent.action == "open":
            if st.trade is not None and st.trade.trade_id == intent.trade_id:
                return False
            st.trade = _open_trade(intent, ts)
            st.open_legs, st.closing = {}, None
            return True
        until = ts + int(self.cfg.cooldown_s * NS)
        if st.trade is not None and st.trade.trade_id != intent.trade_id:
            logger.warning("last intent closes another trade symbol=%s open=%s closed=%s; flat",
                           intent.symbol, st.trade.trade_id, intent.trade_id)
        exiting = self._exit_of(st, intent)
        if st.trade is None and st.cooldown_until_ns == until and exiting is None:
            return False
        if exiting is not None:  # its outcome follows in the EXEC events replayed next
            st.exiting, st.exit_legs = exiting, {}
        st.trade, st.closing, st.open_legs = None, None, {}
        st.cooldown_until_ns = until
        return True

    @staticmethod
    def _exit_of(st: SymbolState, intent: Intent) -> OpenTrade | None:
        """The close ``intent`` awaiting its outcome, if the state does not know it yet: of
        the open trade, or a later close of the trade whose last close it knows."""
        attempt = _close_attempt(intent)
        known = st.exiting
        if known is not None and known.trade_id == intent.trade_id and known.closes >= attempt:
            return None
        base = next((t for t in (st.trade, known) if t is not None
                     and t.trade_id == intent.trade_id), None)
        return replace(base, closes=attempt, quantity=intent.quantity) if base else None


def _open_trade(intent: Intent, opened_ns: int) -> OpenTrade:
    return OpenTrade(
        trade_id=intent.trade_id, buy_venue=intent.buy_venue, sell_venue=intent.sell_venue,
        quantity=intent.quantity, entry_spread_bps=intent.net_spread_bps,
        buy_price=intent.buy_price, sell_price=intent.sell_price, opened_ns=opened_ns,
    )


def _close_attempt(intent: Intent) -> int:
    """n of a close intent id ``<trade_id>:<n>:close`` (1 for ``<trade_id>:close``)."""
    middle = intent.intent_id.removeprefix(f"{intent.trade_id}:").removesuffix(":close")
    return int(middle) if middle.isdigit() else 1


def _trade_dict(trade: OpenTrade) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(trade).items()}


def _trade(raw: Mapping[str, Any] | None) -> OpenTrade | None:
    if raw is None:
        return None
    return OpenTrade(
        trade_id=str(raw["trade_id"]), buy_venue=str(raw["buy_venue"]),
        sell_venue=str(raw["sell_venue"]), quantity=D(raw["quantity"]),
        entry_spread_bps=D(raw["entry_spread_bps"]), buy_price=D(raw["buy_price"]),
        sell_price=D(raw["sell_price"]), opened_ns=int(raw["opened_ns"]),
        closes=int(raw.get("closes", 0)),
    )
