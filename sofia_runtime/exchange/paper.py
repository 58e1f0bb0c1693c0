"""A simulated venue that trades against the replayed tape, behind the same interface as the live adapter.

- An order reaches the venue after a latency drawn from the venue's private-REST probe samples.
- A limit order rests in a queue: it joins behind the size already shown at its price, and fills only when
  the tape trades through its price, or at its price after the size ahead of it has traded. Partial fills
  follow from the traded amounts. A post-only order that would take on arrival is cancelled.
- A market order walks the book: the top of book from the data, and below it `DEPTH_LEVELS` levels one
  spread apart whose size grows linearly (level k shows (k + 1) x the top size). What the book cannot fill
  is cancelled (immediate-or-cancel).
- Rejects: price not on the tick, amount not on the step or below the minimum, notional below the minimum
  (the markets table: ccxt precision and limits), insufficient balance (spot: the asset sold or the quote
  spent, including what resting orders hold; perp: free quote covers the initial margin).
- Maker and taker fees from the fee table, charged in the quote currency.

The venue keeps its own record, one JSON line per order change and trade, in `record_path`; a restarted
runtime reloads it, so the venue still knows every order and trade it had (as a real venue would), which is
what recovery by client order id and reconciliation rely on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np

from sofia_runtime.exchange.base import InsufficientFunds, InvalidOrder, OrderNotFound, on_grid
from sofia_runtime.fees import FeeSchedule
from sofia_runtime.marketdata import Book, TradeTick

DEPTH_LEVELS = 5
PERP_INITIAL_MARGIN = Decimal("0.1")
ZERO = Decimal(0)


def dec(x) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(str(x))


@dataclass(frozen=True)
class MarketSpec:
    venue: str
    symbol: str
    market: str
    base: str
    quote: str
    price_tick: Decimal
    amount_step: Decimal
    min_amount: Decimal
    min_notional: Decimal

    @classmethod
    def from_row(cls, row: dict) -> MarketSpec:
        return cls(row["venue"], row["symbol"], row["market"], row["base"], row["quote"], dec(row["price_tick"]),
                   dec(row["amount_step"]), dec(row["min_amount"]), dec(row["min_notional"] or 0))

    def round_price(self, price: float, side: str, passive: bool = True) -> Decimal:
        """On the tick, rounded away from the other side when `passive` (a bid down, an ask up)."""
        ticks = dec(price) / self.price_tick
        down = (side == "buy") == passive
        return (ticks.to_integral_value("ROUND_FLOOR" if down else "ROUND_CEILING") * self.price_tick).normalize()

    def round_amount(self, amount: float) -> Decimal:
        return ((dec(amount) / self.amount_step).to_integral_value("ROUND_FLOOR") * self.amount_step).normalize()


def book_levels(book: Book, side: str, tick: float) -> list[tuple[float, float]]:
    """(price, size) levels a taker on `side` walks: asks for a buy, bids for a sell."""
    step = max(book.spread, tick)
    if side == "buy":
        return [(book.ask + k * step, book.ask_size * (k + 1)) for k in range(DEPTH_LEVELS)]
    return [(book.bid - k * step, book.bid_size * (k + 1)) for k in range(DEPTH_LEVELS)]


class PaperVenue:
    def __init__(self, name: str, markets: dict[str, MarketSpec], fees: FeeSchedule, latency_ms: np.ndarray,
                 record_path: Path, starting_balances: dict[str, Decimal], books: Callable[[str], Book],
                 clock: Callable[[], int], seed: int = 0):
        self.name, self.markets, self.fees = name, markets, fees
        self.latency_ms = latency_ms if len(latency_ms) else np.array([50.0])
        self.books, self.clock = books, clock
        self.rng = np.random.default_rng(seed)
        self.orders: dict[str, dict] = {}
        self.by_client: dict[str, str] = {}
        self.trades: list[dict] = []
        self.fundings: list[dict] = []
        self.balances: dict[str, Decimal] = {}
        self.pending: list[str] = []  # order ids not yet at the venue (in flight), in arrival order
        self._resting: dict[str, list[str]] = {}  # symbol -> resting order ids
        self._new_trades: list[dict] = []
        self._new_funding: list[dict] = []
        self._closed: list[dict] = []
        self.record_path = record_path
        self._record_file = None
        record_path.parent.mkdir(parents=True, exist_ok=True)
        if record_path.exists():
            self._reload()
        else:
            self.balances = {k: dec(v) for k, v in starting_balances.items()}
            self._record({"t": "open", "balances": {k: str(v) for k, v in self.balances.items()}})

    # --- the venue's own record ---------------------------------------------------------------------
    def _record(self, line: dict) -> None:
        if self._record_file is None:  # kept open: line-buffered, each record reaches the OS as it is written
            self._record_file = self.record_path.open("a", buffering=1, encoding="utf-8")
        self._record_file.write(json.dumps(line, default=str, separators=(",", ":")) + "\n")

    def _reload(self) -> None:
        with self.record_path.open() as f:
            for number, raw in enumerate(f, start=1):
                if not raw.endswith("\n"):
                    break  # a line torn by a crash never reached the venue
                line = json.loads(raw)
                if line["t"] == "open":
                    self.balances = {k: Decimal(v) for k, v in line["balances"].items()}
                elif line["t"] == "order":
                    order = _order_from_json(line["order"])
                    self.orders[order["id"]] = order
                    self.by_client[order["clientOrderId"]] = order["id"]
                elif line["t"] == "trade":
                    trade = _trade_from_json(line["trade"])
                    self.trades.append(trade)
                    self._settle(trade)
                elif line["t"] == "funding":
                    payment = line["funding"]
                    self.fundings.append(payment)
                    quote = self.markets[payment["symbol"]].quote
                    self.balances[quote] = self.balances.get(quote, ZERO) + Decimal(payment["amount"])
                else:
                    raise ValueError(f"{self.record_path}:{number}: unknown record type {line['t']!r}")
        for order in self.orders.values():
            if order["status"] == "open":
                if order["_active"]:
                    self._resting.setdefault(order["symbol"], []).append(order["id"])
                else:
                    self.pending.append(order["id"])

    def _save(self, order: dict) -> None:
        self._record({"t": "order", "order": _order_to_json(order)})

    # --- the ccxt-shaped interface -------------------------------------------------------------------
    async def create_order(self, symbol: str, type: str, side: str, amount, price=None, params=None) -> dict:
        return self.place(symbol, type, side, dec(amount), None if price is None else dec(price), params or {})

    def place(self, symbol: str, type: str, side: str, amount: Decimal, price: Decimal | None, params: dict) -> dict:
        client_id = params.get("clientOrderId")
        if client_id and client_id in self.by_client:
            raise InvalidOrder(f"{self.name}: duplicate clientOrderId {client_id}")
        spec = self._validate(symbol, type, side, amount, price)
        now = self.clock()
        order_id = f"{self.name}-{len(self.orders) + 1}"
        order = {"id": order_id, "clientOrderId": client_id or order_id, "timestamp": now, "symbol": symbol,
                 "type": type, "side": side, "price": price, "amount": amount, "filled": ZERO, "remaining": amount,
                 "average": None, "cost": ZERO, "status": "open", "postOnly": bool(params.get("postOnly")),
                 "fee": {"cost": ZERO, "currency": spec.quote}, "reason": None,
                 "_arrive": now + int(self.rng.choice(self.latency_ms)), "_active": False, "_ahead": 0.0}
        self.orders[order_id] = order
        self.by_client[order["clientOrderId"]] = order_id
        self.pending.append(order_id)
        self._save(order)
        return public(order)

    async def cancel_order(self, id: str, symbol: str | None = None, params=None) -> dict:
        order = self.orders.get(id)
        if order is None:
            raise OrderNotFound(f"{self.name}: no order {id}")
        if order["status"] != "open":
            raise OrderNotFound(f"{self.name}: order {id} is {order['status']}, not open")
        self._close(order, "canceled", "cancelled by the client")
        return public(order)

    async def fetch_order(self, id: str | None, symbol: str | None = None, params=None) -> dict:
        if id is None and params and params.get("clientOrderId"):
            id = self.by_client.get(params["clientOrderId"])
        if id not in self.orders:
            raise OrderNotFound(f"{self.name}: no order {id}")
        return public(self.orders[id])

    async def find_order(self, client_order_id: str, symbol: str | None = None) -> dict | None:
        oid = self.by_client.get(client_order_id)
        return public(self.orders[oid]) if oid else None

    async def fetch_open_orders(self, symbol: str | None = None) -> list[dict]:
        return [public(o) for o in self.orders.values()
                if o["status"] == "open" and (symbol is None or o["symbol"] == symbol)]

    async def fetch_balance(self) -> dict:
        used = self._reserved()
        return {asset: {"total": total, "used": used.get(asset, ZERO), "free": total - used.get(asset, ZERO)}
                for asset, total in self.balances.items()}

    async def fetch_my_trades(self, symbol: str | None = None, since: int | None = None) -> list[dict]:
        return [dict(t) for t in self.trades
                if (symbol is None or t["symbol"] == symbol) and (since is None or t["timestamp"] >= since)]

    def drain_trades(self) -> list[dict]:
        out, self._new_trades = self._new_trades, []
        return out

    def drain_funding(self) -> list[dict]:
        out, self._new_funding = self._new_funding, []
        return out

    def on_funding(self, symbol: str, rate: float, ts: int) -> None:
        """A perp's funding charge: a long pays position x mark x rate to the shorts (receives when negative)."""
        spec = self.markets.get(symbol)
        position = self.balances.get(symbol, ZERO)
        book = self.books(symbol)
        if spec is None or spec.market != "perp" or position == 0 or not book.valid:
            return
        mark = dec(book.mid).quantize(spec.price_tick)
        amount = (-position * mark * dec(rate)).quantize(Decimal("1e-8"))
        payment = {"id": f"{self.name}-F{len(self.fundings) + 1}", "symbol": symbol, "timestamp": ts, "rate": str(dec(rate)),
                   "position": str(position), "mark": str(mark), "amount": str(amount), "currency": spec.quote}
        self.fundings.append(payment)
        self.balances[spec.quote] = self.balances.get(spec.quote, ZERO) + amount
        self._record({"t": "funding", "funding": payment})
        self._new_funding.append(payment)

    def drain_closed_orders(self) -> list[dict]:
        out, self._closed = self._closed, []
        return out

    async def close(self) -> None:
        if self._record_file is not None:
            self._record_file.close()
            self._record_file = None

    # --- validation and balances ---------------------------------------------------------------------
    def _validate(self, symbol: str, type: str, side: str, amount: Decimal, price: Decimal | None) -> MarketSpec:
        spec = self.markets.get(symbol)
        if spec is None:
            raise InvalidOrder(f"{self.name}: no market {symbol}")
        if side not in ("buy", "sell") or type not in ("limit", "market"):
            raise InvalidOrder(f"{self.name} {symbol}: bad side/type {side}/{type}")
        if type == "limit" and (price is None or price <= 0):
            raise InvalidOrder(f"{self.name} {symbol}: a limit order needs a positive price, got {price}")
        if price is not None and not on_grid(price, spec.price_tick):
            raise InvalidOrder(f"{self.name} {symbol}: price {price} is not a multiple of the tick {spec.price_tick}")
        if not on_grid(amount, spec.amount_step):
            raise InvalidOrder(f"{self.name} {symbol}: amount {amount} is not a multiple of the step {spec.amount_step}")
        if amount < spec.min_amount:
            raise InvalidOrder(f"{self.name} {symbol}: amount {amount} is below the minimum {spec.min_amount}")
        book = self.books(symbol)
        ref = price if price is not None else dec(book.ask if side == "buy" else book.bid) if book.valid else None
        if ref is None:
            raise InvalidOrder(f"{self.name} {symbol}: no book to price a market order")
        notional = ref * amount
        if notional < spec.min_notional:
            raise InvalidOrder(f"{self.name} {symbol}: notional {notional} is below the minimum {spec.min_notional}")
        free = {a: self.balances.get(a, ZERO) - r for a, r in self._reserved().items()}
        quote_free = free.get(spec.quote, self.balances.get(spec.quote, ZERO))
        if spec.market == "perp":
            need = notional * PERP_INITIAL_MARGIN
            if quote_free < need:
                raise InsufficientFunds(f"{self.name} {symbol}: margin {need} {spec.quote} needed, {quote_free} free")
        elif side == "buy":
            need = notional * (1 + dec(self.fees.rate(self.name, symbol, "taker", _day(self.clock()))))
            if quote_free < need:
                raise InsufficientFunds(f"{self.name} {symbol}: {need} {spec.quote} needed, {quote_free} free")
        else:
            base_free = free.get(spec.base, self.balances.get(spec.base, ZERO))
            if base_free < amount:
                raise InsufficientFunds(f"{self.name} {symbol}: sells {amount} {spec.base}, {base_free} free")
        return spec

    def _reserved(self) -> dict[str, Decimal]:
        used: dict[str, Decimal] = {}
        for o in self.orders.values():
            if o["status"] != "open":
                continue
            spec = self.markets[o["symbol"]]
            if spec.market == "perp":
                continue
            if o["side"] == "buy":
                price = o["price"] if o["price"] is not None else dec(self.books(o["symbol"]).ask)
                used[spec.quote] = used.get(spec.quote, ZERO) + price * o["remaining"]
            else:
                used[spec.base] = used.get(spec.base, ZERO) + o["remaining"]
        return used

    def _settle(self, trade: dict) -> None:
        spec = self.markets[trade["symbol"]]
        asset = trade["symbol"] if spec.market == "perp" else spec.base
        sign = 1 if trade["side"] == "buy" else -1
        self.balances[asset] = self.balances.get(asset, ZERO) + sign * trade["amount"]
        self.balances[spec.quote] = self.balances.get(spec.quote, ZERO) - sign * trade["cost"] - trade["fee"]["cost"]

    # --- matching -------------------------------------------------------------------------------------
    def advance(self, now_ms: int) -> None:
        """Orders whose latency has elapsed reach the book."""
        while self.pending and self.orders[self.pending[0]]["_arrive"] <= now_ms:
            order = self.orders[self.pending.pop(0)]
            if order["status"] == "open":
                self._arrive(order)

    def _arrive(self, order: dict) -> None:
        book = self.books(order["symbol"])
        spec = self.markets[order["symbol"]]
        if not book.valid:
            self._close(order, "canceled", "no market")
            return
        if order["type"] == "market":
            self._take(order, book, spec, limit=None)
            if order["status"] == "open":
                self._close(order, "canceled" if order["filled"] == 0 else "closed", "book exhausted")
            return
        price = float(order["price"])
        crosses = price >= book.ask if order["side"] == "buy" else price <= book.bid
        if crosses and order["postOnly"]:
            self._close(order, "canceled", "post-only order would take liquidity")
            return
        if crosses:
            self._take(order, book, spec, limit=price)
            if order["status"] != "open":
                return
        touch = book.bid if order["side"] == "buy" else book.ask
        size = book.bid_size if order["side"] == "buy" else book.ask_size
        behind = (touch - price) if order["side"] == "buy" else (price - touch)
        if behind < -1e-12:
            order["_ahead"] = 0.0  # inside the spread: first in a new level
        else:
            order["_ahead"] = size * (1 + round(behind / max(book.spread, float(spec.price_tick))))
        order["_active"] = True
        self._resting.setdefault(order["symbol"], []).append(order["id"])
        self._save(order)

    def _take(self, order: dict, book: Book, spec: MarketSpec, limit: float | None) -> None:
        for price, size in book_levels(book, order["side"], float(spec.price_tick)):
            if order["remaining"] <= 0:
                break
            if limit is not None and (price > limit if order["side"] == "buy" else price < limit):
                break
            qty = min(order["remaining"], spec.round_amount(size))
            if qty > 0:
                self._fill(order, spec.round_price(price, order["side"], passive=False), qty, "taker")

    def on_book(self, book: Book) -> None:
        ids = self._resting.get(book.symbol)
        if not ids:
            return
        for oid in list(ids):
            order = self.orders[oid]
            price = float(order["price"])
            if order["side"] == "buy":
                if book.ask <= price:  # the market came through the order
                    self._fill(order, order["price"], min(order["remaining"], self._amount(book.ask_size, order)), "maker")
                elif book.bid < price:
                    order["_ahead"] = 0.0
                elif book.bid == price:
                    order["_ahead"] = min(order["_ahead"], book.bid_size)
            else:
                if book.bid >= price:
                    self._fill(order, order["price"], min(order["remaining"], self._amount(book.bid_size, order)), "maker")
                elif book.ask > price:
                    order["_ahead"] = 0.0
                elif book.ask == price:
                    order["_ahead"] = min(order["_ahead"], book.ask_size)

    def on_trade(self, tick: TradeTick) -> None:
        ids = self._resting.get(tick.symbol)
        if not ids:
            return
        side = "buy" if tick.side == "sell" else "sell"  # resting orders a taker of this side meets
        orders = [self.orders[i] for i in ids if self.orders[i]["side"] == side]
        if side == "buy":
            orders = [o for o in orders if float(o["price"]) >= tick.price]
            orders.sort(key=lambda o: (-o["price"], o["timestamp"]))
        else:
            orders = [o for o in orders if float(o["price"]) <= tick.price]
            orders.sort(key=lambda o: (o["price"], o["timestamp"]))
        available = tick.amount
        for order in orders:
            if available <= 0:
                break
            if float(order["price"]) == tick.price:
                if available <= order["_ahead"]:
                    order["_ahead"] -= available
                    available = 0.0
                    break
                available -= order["_ahead"]
                order["_ahead"] = 0.0
            qty = min(order["remaining"], self._amount(available, order))
            if qty > 0:
                available -= float(qty)
                self._fill(order, order["price"], qty, "maker")

    def _amount(self, size: float, order: dict) -> Decimal:
        # round off float noise first (0.2 - 0.1000000000000001 must still fill 0.1, not floor to 0.09999)
        return self.markets[order["symbol"]].round_amount(round(max(size, 0.0), 12))

    def _fill(self, order: dict, price: Decimal, qty: Decimal, liquidity: str) -> None:
        now = self.clock()
        spec = self.markets[order["symbol"]]
        cost = price * qty
        fee = (cost * dec(self.fees.rate(self.name, order["symbol"], liquidity, _day(now)))).quantize(Decimal("1e-8"))
        trade = {"id": f"{self.name}-T{len(self.trades) + 1}", "order": order["id"],
                 "clientOrderId": order["clientOrderId"], "timestamp": now, "symbol": order["symbol"],
                 "side": order["side"], "type": order["type"], "takerOrMaker": liquidity, "price": price,
                 "amount": qty, "cost": cost, "fee": {"cost": fee, "currency": spec.quote}}
        self.trades.append(trade)
        self._record({"t": "trade", "trade": _trade_to_json(trade)})
        self._settle(trade)
        order["filled"] += qty
        order["remaining"] -= qty
        order["cost"] += cost
        order["average"] = order["cost"] / order["filled"]
        order["fee"]["cost"] += fee
        self._new_trades.append(dict(trade))
        if order["remaining"] <= 0:
            self._close(order, "closed", None)
        else:
            self._save(order)

    def _close(self, order: dict, status: str, reason: str | None) -> None:
        order["status"], order["reason"] = status, reason
        ids = self._resting.get(order["symbol"])
        if ids and order["id"] in ids:
            ids.remove(order["id"])
        if order["id"] in self.pending:
            self.pending.remove(order["id"])
        self._save(order)
        self._closed.append(public(order))

    def sync(self) -> None:
        """Make the venue's record durable (the engine calls it with the journal's group commit)."""
        if self._record_file is not None:
            os.fsync(self._record_file.fileno())


def _day(ms: int):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date()


def public(order: dict) -> dict:
    out = {k: v for k, v in order.items() if not k.startswith("_")}
    out["fee"] = dict(order["fee"])
    return out


_DECIMAL_ORDER = ("price", "amount", "filled", "remaining", "average", "cost")


def _order_to_json(order: dict) -> dict:
    out = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in order.items() if k != "fee"}
    out["fee"] = {"cost": str(order["fee"]["cost"]), "currency": order["fee"]["currency"]}
    return out


def _order_from_json(data: dict) -> dict:
    order = {k: (Decimal(v) if k in _DECIMAL_ORDER and v is not None else v) for k, v in data.items()}
    order["fee"] = {"cost": Decimal(data["fee"]["cost"]), "currency": data["fee"]["currency"]}
    return order


def _trade_to_json(trade: dict) -> dict:
    return _order_to_json(trade)


def _trade_from_json(data: dict) -> dict:
    return _order_from_json(data)
