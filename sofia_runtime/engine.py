"""The engine: market data in -> strategy proposes -> EV gate -> risk limits -> exchange adapter, with every
step in the audit journal.

Ordering that the rest relies on:
- a decision is journaled (pass or reject) before anything is sent;
- an order's record is durable (flushed and fsynced; one fsync may cover several records) before the
  adapter is called, and its client order id is derived from the journal, so after a crash the runtime asks
  the venue about every order it journaled and never sends one twice;
- fills and closed orders are journaled as the adapter reports them, each trade id once.

State (positions, cash, open orders, P&L) is rebuilt from the journal on start; the replay resumes after
the last market time the journal saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from sofia_runtime import control
from sofia_runtime.exchange.base import (ExchangeError, InsufficientFunds, InvalidOrder, NetworkError, OrderNotFound,
                                        create_order_once)
from sofia_runtime.exchange.paper import MarketSpec, PaperVenue, book_levels, dec
from sofia_runtime.fees import FeeSchedule
from sofia_runtime.fill_model import FillParams
from sofia_runtime.gate import GateParams, Intent, Leg, LegInputs, evaluate, limit_order_ev
from sofia_runtime.journal import Journal, decimals, journal_files, read_records
from sofia_runtime.limits import Limits, RiskState
from sofia_runtime.marketdata import BOOK, FUNDING, Book, Books
from sofia_runtime.metrics import Metrics
from sofia_runtime.snapshot import Snapshot
from sofia_runtime.strategies.base import Cancel, Strategy
from sofia_runtime.tax import rate_on, rules_from_table
from sofia_runtime.tradable import refusal_map

ZERO = Decimal(0)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


@dataclass
class OpenOrder:
    client_order_id: str
    venue: str
    symbol: str
    side: str
    type: str
    price: Decimal | None
    amount: Decimal
    strategy: str
    tag: str
    decision_seq: int
    placed_ms: int
    order_id: str | None = None
    filled: Decimal = ZERO


@dataclass
class Execution:
    """The orders of one intent: both legs or neither."""
    intent: Intent
    decision_seq: int
    client_ids: list[str] = field(default_factory=list)
    failed: bool = False
    filled: dict[str, Decimal] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)


class Engine:
    def __init__(self, cfg, snapshot: Snapshot, journal: Journal, venues: dict, strategy: Strategy,
                 metrics: Metrics | None = None, pause_path=None, live: bool = False,
                 wall_clock: Callable[[], float] = time.time):
        self.cfg, self.journal, self.venues, self.strategy = cfg, journal, venues, strategy
        self.metrics = metrics or Metrics()
        self.pause_path = pause_path
        self.live = live
        self.wall_clock = wall_clock
        self.books = Books()
        self.now_ms = 0
        self.started_wall = time.monotonic()
        self.runtime_id = journal.runtime_id
        self._cid_prefix = "sf" + hashlib.sha256(self.runtime_id.encode()).hexdigest()[:6]
        self.open: dict[str, OpenOrder] = {}
        self.executions: dict[str, Execution] = {}  # client id -> its intent's execution
        self.positions: dict[tuple[str, str], Decimal] = {}
        self.cash: dict[tuple[str, str], Decimal] = {}
        self.fees_paid: dict[tuple[str, str], Decimal] = {}
        self.funding_paid: dict[tuple[str, str], Decimal] = {}  # received when positive
        self.seen_trades: set[str] = set()
        self.seen_funding: set[str] = set()
        self.cid_by_order_id: dict[str, str] = {}
        self.state = RiskState()
        self.counters = {"decisions": 0, "passed": 0, "rejected": 0, "blocked": 0, "orders": 0, "order_errors": 0,
                         "fills": 0, "cancels": 0, "errors": 0, "unwinds": 0}
        self.day_start_pnl: tuple[str, float] | None = None
        self.last_market_ms = 0
        self._stale_checked_ms = 0
        self.stopping = asyncio.Event()
        self.venue_error: str | None = None
        self.market_data: str | None = None  # live: "websocket" or "polling", whichever feeds the books now
        self.snapshot_error: str | None = None
        self._pending_balance: list[Execution] = []
        self.instruments: set[tuple[str, str]] = set()
        self.not_tradable: dict[tuple[str, str], str] = {}  # refused at start (sofia_runtime.tradable), with why
        self._fills_for_strategy: list[dict] = []
        self.unknown: dict[str, OpenOrder] = {}  # sent, outcome unknown after retries
        self.order_guard = None  # () -> reason an order may not be sent now (the trading lease), or None
        self.draining = False  # handing over: venues still report, strategies propose nothing
        self.role: str | None = None  # blue-green: "standby" or "active"
        self.handover_to: str | None = None
        self.use_snapshot(snapshot)
        self.attach_venues(venues)
        self.consecutive_venue_errors = 0

    def attach_venues(self, venues: dict) -> None:
        """Venues by name; a fault injector in front of a paper venue still lets the paper venue see the market."""
        self.venues = venues
        self._paper_by_name = {n: getattr(v, "inner", v) for n, v in venues.items()
                               if isinstance(getattr(v, "inner", v), PaperVenue)}

    def request_handover(self, to: str) -> None:
        """Stop trading for the other slot: no new orders from now, then the runner shuts down and releases."""
        self.handover_to = to
        self.draining = True
        self.stopping.set()

    # --- snapshot-derived state -------------------------------------------------------------------------
    def use_snapshot(self, snapshot: Snapshot) -> None:
        t = snapshot.tables
        self.snapshot = snapshot
        self.fee_schedule = FeeSchedule(t["fee_table"])
        self.tax_rules = rules_from_table(t["tax_rules"])
        self._day_cache = (-1, None, 0.0)
        self.markets = {(r["venue"], r["symbol"]): MarketSpec.from_row(r) for r in t["markets"].iter_rows(named=True)}
        self.fill_params = {(r["venue"], r["symbol"], r["side"]): FillParams(r["intensity_a"], r["decay_k"],
                                                                             r["vol_ref"], r["vol_exponent"])
                            for r in t["fill_model"].iter_rows(named=True)}
        self.limits = Limits(t["risk_limits"], self.cfg.limits.stale_after_s, self.cfg.limits.max_open_orders_total)
        self.sessions = {(r["venue"], r["symbol"], r["hour"]): r["active"]
                         for r in t["session_schedule"].iter_rows(named=True)}
        self.gate_params = GateParams(self.cfg.gate.threshold_usd, self.cfg.gate.miss_cost_bps,
                                      self.cfg.gate.adverse_selection_bps, self.cfg.gate.horizon_s)

    # --- the context strategies see ---------------------------------------------------------------------
    @property
    def hour(self) -> int:
        return datetime.fromtimestamp(self.now_ms / 1000, tz=timezone.utc).hour

    def has_market(self, venue: str, symbol: str) -> bool:
        return (venue, symbol) in self.markets and venue in self.venues

    def spec(self, venue: str, symbol: str) -> MarketSpec:
        return self.markets[(venue, symbol)]

    def book(self, venue: str, symbol: str) -> Book:
        return self.books.get(venue, symbol)

    def position(self, venue: str, symbol: str) -> float:
        return float(self.positions.get((venue, symbol), ZERO))

    def max_position(self, venue: str, symbol: str) -> float:
        lim = self.limits.by_key.get((venue, symbol))
        return lim.max_position if lim else 0.0

    def session_active(self, venue: str, symbol: str) -> bool:
        return self.sessions.get((venue, symbol, self.hour), False)

    def open_orders(self) -> list[OpenOrder]:
        return list(self.open.values())

    def fee_rate(self, venue: str, symbol: str, liquidity: str) -> float:
        return self.fee_schedule.rate(venue, symbol, liquidity, self._day())

    def usd_per_quote(self, venue: str, symbol: str) -> float:
        quote = self.markets[(venue, symbol)].quote
        if quote in ("USDT", "USD", "USDC"):
            return 1.0
        # a non-USD quote (TRY at BtcTurk) through the same base's USDT price on another venue
        base = self.markets[(venue, symbol)].base
        local = self.books.get(venue, symbol)
        for (v, s), book in self.books.by_key.items():
            if s == f"{base}/USDT" and book.valid and local.valid:
                return book.mid / local.mid
        return math.nan

    @staticmethod
    def dec(x) -> Decimal:
        return dec(x)

    @property
    def venues_list(self) -> list[str]:
        return list(self.venues)

    def limit_order_ev(self, price: float, amount: float, edge_usd: float, inputs: LegInputs) -> float:
        """What the gate's EV would be for one limit leg at `price` (gate.limit_order_ev), without journaling."""
        return limit_order_ev(price, amount, edge_usd, inputs, self.gate_params)

    def leg_inputs(self, leg: Leg) -> LegInputs:
        return self._leg_inputs(leg)

    def _day(self):
        ms = self.now_ms or int(self.wall_clock() * 1000)
        day_ms = ms - ms % 86_400_000
        if day_ms != self._day_cache[0]:
            day = datetime.fromtimestamp(day_ms / 1000, tz=timezone.utc).date()
            self._day_cache = (day_ms, day, float(rate_on(self.tax_rules, "transaction_tax", day)))
        return self._day_cache[1]

    def _transaction_tax_rate(self) -> float:
        self._day()
        return self._day_cache[2]

    def _leg_inputs(self, leg: Leg) -> LegInputs:
        book = self.books.get(leg.venue, leg.symbol)
        spec = self.markets.get((leg.venue, leg.symbol))
        liquidity = "maker" if leg.type == "limit" and leg.post_only else "taker"
        try:
            fee_rate = self.fee_rate(leg.venue, leg.symbol, liquidity)
        except KeyError:
            fee_rate = math.nan
        tax_rate = self._transaction_tax_rate() if leg.side == "sell" else 0.0
        slippage = 0.0
        if leg.type == "market" and book.valid and spec is not None:
            slippage = expected_slippage(book, leg.side, leg.amount, float(spec.price_tick))
        return LegInputs(book.mid if book.valid else math.nan, book.spread if book.valid else math.nan, book.vol(),
                         self.usd_per_quote(leg.venue, leg.symbol) if spec else math.nan, fee_rate, tax_rate, slippage,
                         self.fill_params.get((leg.venue, leg.symbol, leg.side)))

    # --- P&L -----------------------------------------------------------------------------------------
    def pnl_usd(self) -> tuple[float, float]:
        """(net, fees) in USD: cash plus positions marked to mid, over every venue and symbol traded."""
        net = fees = 0.0
        for key, pos in self.positions.items():
            book = self.books.get(*key)
            mark = book.mid if book.valid else 0.0
            usd = self.usd_per_quote(*key) if key in self.markets else 1.0
            usd = usd if math.isfinite(usd) else 0.0
            net += (float(self.cash.get(key, ZERO)) + float(pos) * mark) * usd
            fees += float(self.fees_paid.get(key, ZERO)) * usd
        return net, fees

    def _update_pnl_today(self) -> None:
        net, _ = self.pnl_usd()
        day = self._day().isoformat()
        if self.day_start_pnl is None or self.day_start_pnl[0] != day:
            self.day_start_pnl = (day, net)
        self.state.pnl_today_usd = net - self.day_start_pnl[1]
        self.metrics.pnl.set(net)

    # --- deciding and sending --------------------------------------------------------------------------
    async def act(self, actions) -> None:
        for action in actions:
            if isinstance(action, Cancel):
                await self.cancel(action.client_order_id, action.reason)
            else:
                await self.submit(action)

    async def submit(self, intent: Intent) -> bool:
        t0 = time.perf_counter()
        inputs = [self._leg_inputs(leg) for leg in intent.legs]
        decision = evaluate(intent, inputs, self.gate_params)
        block = None
        if decision.passed:
            ages = [self.book_age_s(leg.venue, leg.symbol) for leg in intent.legs]
            self._refresh_risk_state()
            block = self.limits.check(intent, self.state, ages, [leg["notional_usd"] for leg in decision.legs])
            block = block or next((f"not tradable: {self.not_tradable[(leg.venue, leg.symbol)]}" for leg in intent.legs
                                   if (leg.venue, leg.symbol) in self.not_tradable and not intent.reduce_only), None)
        passed = decision.passed and block is None
        result = "passed" if passed else ("blocked" if block else "rejected")
        decided = time.perf_counter() - t0
        self.metrics.decision_seconds.observe(decided)
        self.metrics.decisions.labels(intent.strategy, result).inc()
        self.counters["decisions"] += 1
        self.counters["passed" if passed else ("blocked" if block else "rejected")] += 1
        if block:
            self.metrics.blocks.labels(intent.strategy).inc()
        rec = self.journal.append("decision", {
            "strategy": intent.strategy, "tag": intent.tag, "passed": passed, "result": result,
            "reason": block or decision.reason, "gate_reason": decision.reason, "intent_reason": intent.reason,
            "reduce_only": intent.reduce_only, "hold_hours": intent.hold_hours, "market_ts": self.now_ms,
            "decision_us": int(decided * 1e6), "ev_usd": decision.ev_usd,
            "p_fill": decision.p_fill, "edge_usd": decision.edge_usd, "fees_usd": decision.fees_usd,
            "tax_usd": decision.tax_usd, "slippage_usd": decision.slippage_usd,
            "miss_cost_usd": decision.miss_cost_usd, "threshold_usd": self.gate_params.threshold_usd,
            "legs": decision.legs or [{"venue": l.venue, "symbol": l.symbol, "side": l.side, "type": l.type,
                                       "price": l.price, "amount": l.amount} for l in intent.legs]}, floats_to_decimal=True)
        hook = getattr(self.strategy, "on_decision", None)
        if hook:
            hook(intent, passed, self)
        if not passed:
            return False
        execution = Execution(intent, rec["seq"])
        for k, leg in enumerate(intent.legs):
            ok = await self._send(leg, k, intent, execution, t0)
            if not ok:
                execution.failed = True
                await self._unwind(execution, f"leg {k} ({leg.venue} {leg.side} {leg.symbol}) failed")
                return False
        return True

    def _client_id(self, decision_seq: int, leg: int) -> str:
        return f"{self._cid_prefix}-{decision_seq}-{leg}"

    async def _send(self, leg: Leg, k: int, intent: Intent, execution: Execution, t0: float) -> bool:
        spec = self.markets[(leg.venue, leg.symbol)]
        cid = self._client_id(execution.decision_seq, k)
        amount = spec.round_amount(leg.amount)
        price = spec.round_price(leg.price, leg.side) if leg.price is not None else None
        rec = self.journal.append("order", {
            "client_order_id": cid, "decision_seq": execution.decision_seq, "leg": k, "strategy": intent.strategy,
            "tag": intent.tag, "venue": leg.venue, "symbol": leg.symbol, "side": leg.side, "type": leg.type,
            "price": price, "amount": amount, "post_only": leg.post_only, "market_ts": self.now_ms})
        f0 = time.perf_counter()
        self.journal.durable(rec)  # never an order at the venue that the journal could lose
        durable_at_send = self.journal.durable_seq
        self.metrics.fsync_seconds.observe(time.perf_counter() - f0)
        execution.client_ids.append(cid)
        self.executions[cid] = execution
        refused = self.order_guard() if self.order_guard else None
        if refused:  # checked after the record is durable, right before the venue: nothing slips between
            self.counters["order_errors"] += 1
            self.journal.append("order_rejected", {"client_order_id": cid, "status": "not_sent", "error": refused,
                                                   "market_ts": self.now_ms})
            return False
        params = {"clientOrderId": cid}
        if leg.post_only:
            params["postOnly"] = True
        order = OpenOrder(cid, leg.venue, leg.symbol, leg.side, leg.type, price, amount, intent.strategy, intent.tag,
                          execution.decision_seq, self.now_ms)
        self.open[cid] = order
        try:
            ack = await create_order_once(self.venues[leg.venue], leg.symbol, leg.type, leg.side, amount, price,
                                          params, self.cfg.send_retries, self.cfg.send_backoff_s)
        except (InvalidOrder, InsufficientFunds) as exc:
            self._order_failed(order, "rejected", exc)
            return False
        except NetworkError as exc:
            self._order_unknown(order, exc)
            return False
        except ExchangeError as exc:
            self._order_failed(order, "error", exc)
            self._venue_failed(f"order {cid}: {exc}")
            return False
        order.order_id = str(ack["id"])
        self.cid_by_order_id[order.order_id] = cid
        self.consecutive_venue_errors = 0
        latency = time.perf_counter() - t0
        self.metrics.decision_to_order.observe(latency)
        self.metrics.orders.labels(leg.venue, "acknowledged").inc()
        self.counters["orders"] += 1
        self.journal.append("order_ack", {"client_order_id": cid, "order_id": order.order_id, "status": ack["status"],
                                          "decision_to_ack_us": int(latency * 1e6), "durable_seq_at_send": durable_at_send,
                                          "order_seq": rec["seq"], "market_ts": self.now_ms})
        return True

    def _venue_failed(self, what: str) -> None:
        self.consecutive_venue_errors += 1
        limit = self.cfg.breaker.max_consecutive_venue_errors
        if self.consecutive_venue_errors == limit:
            self.trip_breaker(f"{limit} venue calls failed in a row (last: {what})")

    def trip_breaker(self, reason: str) -> None:
        """Pause through the control file, as an operator or the anomaly detector would; resuming stays a person's
        act. The pause takes effect at the next control-file check (at most `pause_poll_s` later)."""
        if self.pause_path is None:
            return
        if control.pause_unless_paused(self.pause_path, f"runtime-breaker:{self.runtime_id}", reason) is not None:
            self.journal.append_durable("breaker", {"reason": reason, "market_ts": self.now_ms})

    def _order_unknown(self, order: OpenOrder, exc: Exception) -> None:
        """The venue could not tell whether it has the order: keep asking by client order id (`resolve_unknown`)
        and never send it again."""
        self.unknown[order.client_order_id] = order
        self._venue_failed(f"order {order.client_order_id}: {exc}")
        self.counters["order_errors"] += 1
        self.metrics.orders.labels(order.venue, "unknown").inc()
        self.journal.append("order_unknown", {"client_order_id": order.client_order_id,
                                              "error": f"{type(exc).__name__}: {exc}", "market_ts": self.now_ms})

    async def refresh_open_orders(self) -> None:
        """Venues that do not report closings (live): an open order the venue no longer lists is fetched and
        closed with the venue's final state (cancelled, expired or partly filled)."""
        for name, venue in self.venues.items():
            if hasattr(venue, "drain_closed_orders"):
                continue
            mine = [o for o in self.open.values() if o.venue == name and o.order_id]
            if not mine:
                continue
            listed = {str(o["id"]) for o in await venue.fetch_open_orders()}
            for order in mine:
                if order.order_id not in listed and order.client_order_id in self.open:
                    final = await venue.fetch_order(order.order_id, order.symbol)
                    if final["status"] != "open":
                        if dec(final.get("filled") or 0) > order.filled and hasattr(venue, "poll_trades"):
                            await venue.poll_trades([order.symbol])  # its fills first, then its closing
                        self._collect_venue(name)
                        if order.client_order_id in self.open:
                            self._closed(dict(final, clientOrderId=order.client_order_id))

    async def resolve_unknown(self) -> None:
        for cid, order in list(self.unknown.items()):
            try:
                found = await self.venues[order.venue].find_order(cid, order.symbol)
            except NetworkError:
                continue
            del self.unknown[cid]
            if found is None:
                self._order_failed(order, "not_sent", NetworkError("the venue has no such order"))
                continue
            order.order_id = str(found["id"])
            self.cid_by_order_id[order.order_id] = cid
            self.counters["orders"] += 1
            self.journal.append("order_ack", {"client_order_id": cid, "order_id": order.order_id,
                                              "status": found["status"], "recovered": True, "market_ts": self.now_ms})
            if found["status"] != "open" and cid in self.open:
                self._closed(dict(found, clientOrderId=cid))

    def _order_failed(self, order: OpenOrder, status: str, exc: Exception) -> None:
        if self.open.pop(order.client_order_id, None) is not None:
            hook = getattr(self.strategy, "on_order_closed", None)
            if hook:  # an order that never reached the venue is done as far as the strategy is concerned
                hook({"clientOrderId": order.client_order_id, "id": None, "status": status, "filled": ZERO}, self)
        self.counters["order_errors"] += 1
        self.metrics.orders.labels(order.venue, status).inc()
        self.journal.append("order_rejected", {"client_order_id": order.client_order_id, "status": status,
                                               "error": f"{type(exc).__name__}: {exc}", "market_ts": self.now_ms})

    async def _unwind(self, execution: Execution, why: str) -> None:
        """Cancel what of the intent still rests; what already filled is reversed as fills arrive."""
        self.journal.append("intent_failed", {"decision_seq": execution.decision_seq, "reason": why,
                                              "client_order_ids": list(execution.client_ids)})
        for cid in execution.client_ids:
            if cid in self.open:
                await self.cancel(cid, "other leg failed")
        for cid, filled in execution.filled.items():
            await self._reverse(execution, cid, filled, why)
        hook = getattr(self.strategy, "on_pair_failed", None)
        if hook:
            hook(execution.intent, self)

    async def _reverse(self, execution: Execution, cid: str, amount: Decimal, why: str) -> None:
        leg = execution.intent.legs[int(cid.rsplit("-", 1)[1])]
        back = Leg(leg.venue, leg.symbol, "sell" if leg.side == "buy" else "buy", "market", float(amount), None)
        execution.filled[cid] = ZERO
        self.counters["unwinds"] += 1
        self.journal.append("unwind", {"decision_seq": execution.decision_seq, "client_order_id": cid,
                                       "amount": amount, "reason": why})
        await self.submit(Intent(execution.intent.strategy, (back,), 0.0, f"unwind {cid}: {why}", reduce_only=True,
                                 tag=f"unwind:{cid}"))

    async def cancel(self, cid: str, reason: str) -> None:
        order = self.open.get(cid)
        if order is None or order.order_id is None:
            return
        self.journal.append("cancel", {"client_order_id": cid, "order_id": order.order_id, "reason": reason,
                                       "market_ts": self.now_ms})
        self.counters["cancels"] += 1
        self.metrics.cancels.labels(order.venue).inc()
        try:
            closed = await self.venues[order.venue].cancel_order(order.order_id, order.symbol)
        except OrderNotFound:
            try:
                closed = await self.venues[order.venue].fetch_order(order.order_id, order.symbol)
            except ExchangeError as exc:
                self._error("cancel", f"{cid}: not found to cancel, and its state unknown: {exc}")
                return
        except ExchangeError as exc:
            self._error("cancel", f"{cid}: {exc}")
            self._venue_failed(f"cancel {cid}: {exc}")
            return
        self._collect_venue(order.venue)
        if cid in self.open and closed["status"] != "open":
            self._closed(closed)

    def book_age_s(self, venue: str, symbol: str) -> float:
        """How old the book is: in market time when replaying, in wall time when live."""
        book = self.books.get(venue, symbol)
        if self.live:
            return max(0.0, self.wall_clock() - book.ts / 1000) if book.updates else math.inf
        return book.age_s(self.now_ms)

    async def cancel_stale_quotes(self) -> None:
        """Cancel resting limit orders whose book has gone quiet for longer than limits.cancel_stale_after_s: a
        quote priced on a market nobody sees any more is picked off by whoever does. A book not seen since the
        start is left to the stale-data limit (after a restart the replay or the stream has yet to reach it)."""
        limit = self.cfg.limits.cancel_stale_after_s
        for cid, order in list(self.open.items()):
            if order.type == "limit" and order.order_id is not None and self.books.get(order.venue, order.symbol).updates:
                age = self.book_age_s(order.venue, order.symbol)
                if age > limit:
                    await self.cancel(cid, f"stale data: {order.venue} {order.symbol} book is {age:.1f} s old "
                                           f"(limit {limit} s)")

    # --- what the venue reports ------------------------------------------------------------------------
    def _collect_venue(self, venue: str) -> list[dict]:
        v = self.venues[venue]
        fills = [t for t in v.drain_trades() if self._fill(venue, t)]
        self._fills_for_strategy += fills  # the strategy hears of them on the next market event
        drain_closed = getattr(v, "drain_closed_orders", None)
        if drain_closed is None:  # the live adapter reports trades, not closings: an order filled in full is done
            for cid in dict.fromkeys(t.get("clientOrderId") or self.cid_by_order_id.get(str(t["order"])) for t in fills):
                o = self.open.get(cid)
                if o is not None and o.filled >= o.amount:
                    self._closed({"clientOrderId": cid, "id": o.order_id, "status": "closed", "filled": o.filled})
            return fills
        for order in drain_closed():
            if order["clientOrderId"] in self.open:
                self._closed(order)
        return fills

    def _fill(self, venue: str, trade: dict, recovered: bool = False) -> bool:
        tid = str(trade["id"])
        if tid in self.seen_trades:
            return False
        cid = trade.get("clientOrderId") or self.cid_by_order_id.get(str(trade["order"]))
        order = self.open.get(cid)
        execution = self.executions.get(cid)
        strategy = order.strategy if order else (execution.intent.strategy if execution else self.strategy.name)
        self.seen_trades.add(tid)
        price, amount = dec(trade["price"]), dec(trade["amount"])
        fee = dec(trade["fee"]["cost"]) if trade.get("fee") else ZERO
        self.journal.append("fill", {
            "trade_id": tid, "order_id": str(trade["order"]), "client_order_id": cid, "venue": venue,
            "symbol": trade["symbol"], "side": trade["side"], "price": price, "amount": amount,
            "fee": fee, "fee_currency": trade["fee"]["currency"] if trade.get("fee") else None,
            "liquidity": trade.get("takerOrMaker"), "strategy": strategy, "venue_ts": trade.get("timestamp"),
            "market_ts": self.now_ms, "recovered": recovered})
        self._apply_fill(venue, trade["symbol"], trade["side"], price, amount, fee,
                         trade["fee"].get("currency") if trade.get("fee") else None)
        if order:
            order.filled += amount
        if execution:
            execution.filled[cid] = execution.filled.get(cid, ZERO) + amount
        self.counters["fills"] += 1
        self.metrics.fills.labels(venue, trade.get("takerOrMaker") or "unknown").inc()
        return True

    def _funding(self, venue: str, payment: dict) -> None:
        amount = Decimal(payment["amount"])
        key = (venue, payment["symbol"])
        self.cash[key] = self.cash.get(key, ZERO) + amount
        self.funding_paid[key] = self.funding_paid.get(key, ZERO) + amount
        self.seen_funding.add(payment["id"])
        self.journal.append("funding", {"venue": venue, "symbol": payment["symbol"], "funding_id": payment["id"],
                                        "rate": Decimal(payment["rate"]), "position": Decimal(payment["position"]),
                                        "mark": Decimal(payment["mark"]), "amount": amount,
                                        "currency": payment["currency"], "market_ts": self.now_ms})

    def _apply_fill(self, venue, symbol, side, price: Decimal, amount: Decimal, fee: Decimal,
                    fee_currency: str | None = None) -> None:
        key = (venue, symbol)
        sign = 1 if side == "buy" else -1
        spec = self.markets.get(key)
        fee_in_base = spec is not None and fee_currency == spec.base and spec.market == "spot"
        # a venue may take the fee in the asset bought (Binance spot buys): it then comes off the position
        self.positions[key] = self.positions.get(key, ZERO) + sign * amount - (fee if fee_in_base else ZERO)
        self.cash[key] = self.cash.get(key, ZERO) - sign * price * amount - (ZERO if fee_in_base else fee)
        self.fees_paid[key] = self.fees_paid.get(key, ZERO) + (fee * price if fee_in_base else fee)

    def _closed(self, order: dict) -> None:
        cid = order["clientOrderId"]
        mine = self.open.pop(cid, None)
        self.journal.append("order_closed", {"client_order_id": cid, "order_id": str(order["id"]),
                                             "status": order["status"], "filled": dec(order["filled"]),
                                             "reason": order.get("reason"), "market_ts": self.now_ms})
        hook = getattr(self.strategy, "on_order_closed", None)
        if hook and mine:
            hook(order, self)
        execution = self.executions.get(cid)
        if execution:
            execution.closed.add(cid)
            if len(execution.closed) == len(execution.intent.legs) and len(execution.intent.legs) > 1:
                self._pending_balance.append(execution)

    async def _balance_legs(self) -> None:
        """A multi-leg intent whose legs filled different amounts is evened out by reversing the excess."""
        while self._pending_balance:
            execution = self._pending_balance.pop(0)
            filled = [execution.filled.get(cid, ZERO) for cid in execution.client_ids]
            low = min(filled)
            for cid, amount in zip(execution.client_ids, filled):
                if amount > low:
                    await self._reverse(execution, cid, amount - low, "legs filled unequal amounts")
            for cid in execution.client_ids:
                self.executions.pop(cid, None)

    def _refresh_risk_state(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        working: dict[tuple[str, str], list[float]] = {}
        for o in self.open.values():
            key = (o.venue, o.symbol)
            counts[key] = counts.get(key, 0) + 1
            w = working.setdefault(key, [0.0, 0.0])
            w[0 if o.side == "buy" else 1] += float(o.amount - o.filled)
        self.state.open_orders, self.state.working = counts, working
        self.state.positions = {k: float(v) for k, v in self.positions.items()}
        self._update_pnl_today()

    def _error(self, kind: str, message: str) -> None:
        self.counters["errors"] += 1
        self.metrics.errors.labels(kind).inc()
        self.journal.append("error", {"kind": kind, "message": message, "market_ts": self.now_ms})

    # --- pause -----------------------------------------------------------------------------------------
    async def check_pause(self) -> None:
        state = control.read_pause(self.pause_path)
        if state.paused and not self.state.paused:
            self.state.paused, self.state.pause_reason = True, f"{state.reason} (by {state.paused_by})"
            self.metrics.paused.set(1)
            self.journal.append_durable("pause", {"paused_by": state.paused_by, "reason": state.reason,
                                                  "since": state.ts, "market_ts": self.now_ms,
                                                  "resting_orders": len(self.open)})
            for cid, order in list(self.open.items()):
                if order.type == "limit":
                    await self.cancel(cid, "paused")
            self.journal.sync()
        elif not state.paused and self.state.paused:
            self.state.paused, self.state.pause_reason = False, ""
            self.metrics.paused.set(0)
            self.journal.append_durable("resume", {"market_ts": self.now_ms})

    # --- recovery --------------------------------------------------------------------------------------
    def _replay_account_record(self, rec: dict) -> None:
        """What a journaled record did to the venue account: fills and funding move positions and cash."""
        p, kind = rec["payload"], rec["kind"]
        if isinstance(p.get("market_ts"), int):
            self.last_market_ms = max(self.last_market_ms, p["market_ts"])
        if kind == "fill":
            self.seen_trades.add(p["trade_id"])
            self._apply_fill(p["venue"], p["symbol"], p["side"], Decimal(p["price"]), Decimal(p["amount"]),
                             Decimal(p["fee"]), p.get("fee_currency"))
        elif kind == "funding":
            self.seen_funding.add(p["funding_id"])
            key = (p["venue"], p["symbol"])
            self.cash[key] = self.cash.get(key, ZERO) + Decimal(p["amount"])
            self.funding_paid[key] = self.funding_paid.get(key, ZERO) + Decimal(p["amount"])
        elif kind == "order_ack":
            self.cid_by_order_id[p["order_id"]] = p["client_order_id"]

    async def recover(self, partner_dirs=()) -> list[dict]:
        """Rebuild state from this runtime's journal and settle what a crash left open with the venues.
        `partner_dirs`: journals of runtimes that traded the same venue account before (the other slot of a
        blue-green pair); their fills and funding are part of the positions, their orders are theirs."""
        for directory in partner_dirs:
            for _, _, rec in read_records(journal_files(directory), in_progress=True):
                self._replay_account_record(rec)
        records = [rec for _, _, rec in read_records(journal_files(self.journal.dir))]
        orders: dict[str, dict] = {}
        acked: dict[str, str] = {}
        ended: set[str] = set()
        for rec in records:
            p, kind = rec["payload"], rec["kind"]
            self._replay_account_record(rec)
            if kind == "fill":
                if p["client_order_id"] in orders:
                    orders[p["client_order_id"]]["_filled"] += Decimal(p["amount"])
            elif kind == "order":
                orders[p["client_order_id"]] = dict(p, _filled=ZERO)
            elif kind == "order_ack":
                acked[p["client_order_id"]] = p["order_id"]
            elif kind in ("order_rejected", "order_closed"):
                ended.add(p["client_order_id"])
            elif kind == "pause":
                self.state.paused = True
            elif kind == "resume":
                self.state.paused = False
        self.state.paused = False  # the control file decides, on the first check
        recovered = 0
        for cid, p in orders.items():
            if cid in ended:
                continue
            venue = self.venues.get(p["venue"])
            if venue is None:
                continue
            order = OpenOrder(cid, p["venue"], p["symbol"], p["side"], p["type"],
                              Decimal(p["price"]) if p["price"] is not None else None, Decimal(p["amount"]),
                              p["strategy"], p["tag"], p["decision_seq"], p["market_ts"], acked.get(cid), p["_filled"])
            try:
                found = await venue.find_order(cid, p["symbol"])
            except NetworkError as exc:  # the venue cannot say now: keep asking, never re-send
                self.open[cid] = order
                self._order_unknown(order, exc)
                continue
            if cid not in acked:
                if found is None:
                    self.journal.append("order_rejected", {"client_order_id": cid, "status": "not_sent",
                                                           "error": "not at the venue after a restart",
                                                           "market_ts": self.last_market_ms})
                    continue
                self.journal.append("order_ack", {"client_order_id": cid, "order_id": str(found["id"]),
                                                  "status": found["status"], "recovered": True,
                                                  "market_ts": self.last_market_ms})
                self.cid_by_order_id[str(found["id"])] = cid
                recovered += 1
            if found is None:
                continue
            order.order_id = str(found["id"])
            self.open[cid] = order
        for name, venue in self.venues.items():
            symbols = sorted({p["symbol"] for p in orders.values() if p["venue"] == name})
            try:
                for symbol in symbols:  # trades the venue has of this runtime's orders that the journal lacks
                    for trade in await venue.fetch_my_trades(symbol):
                        if str(trade["id"]) not in self.seen_trades and str(trade["order"]) in self.cid_by_order_id:
                            self._fill(name, trade, recovered=True)
                for order in [o for o in self.open.values() if o.venue == name and o.order_id]:
                    state = await venue.fetch_order(order.order_id, order.symbol)
                    if state["status"] != "open":
                        self._closed(dict(state, clientOrderId=order.client_order_id))
            except ExchangeError as exc:  # trading resumes; the venue's later reports and reconciliation catch up
                self._error("recovery", f"{name}: could not settle with the venue: {exc}")
            for payment in getattr(venue, "fundings", []):  # charged at the venue, not yet journaled
                if payment["id"] not in self.seen_funding:
                    self._funding(name, payment)
            drain = getattr(venue, "drain_trades", None)
            if drain:
                drain()
        records = [rec for _, _, rec in read_records(journal_files(self.journal.dir))]  # with what recovery added
        self.strategy.restore(records, self)
        if recovered or orders:
            self.journal.sync()
        return records

    # --- the loop --------------------------------------------------------------------------------------
    async def handle(self, kind: int, obj) -> None:
        """One market event: the paper venues see it first (orders arriving, the tape trading through
        resting orders), then what they report is journaled, then the strategy reacts."""
        self.now_ms = obj.ts
        touched = {obj.venue}  # the paper venues that can have something new to report after this event
        for name, venue in self._paper_by_name.items():
            if venue.pending:
                venue.advance(obj.ts)
                touched.add(name)
        paper = self.paper_by_name.get(obj.venue)
        if kind == FUNDING:
            if paper:
                paper.on_funding(obj.symbol, obj.rate, obj.ts)
                for payment in paper.drain_funding():
                    self._funding(obj.venue, payment)
            return
        if kind == BOOK:
            if paper:
                paper.on_book(obj)
        elif paper:
            paper.on_trade(obj)
        for name in self.venues:
            if name in touched or name not in self._paper_by_name:
                self._collect_venue(name)
        fills, self._fills_for_strategy = self._fills_for_strategy, []
        if self._pending_balance:
            await self._balance_legs()
        if obj.ts - self._stale_checked_ms >= 1000:  # once a market second
            self._stale_checked_ms = obj.ts
            await self.cancel_stale_quotes()
        if self.state.paused or self.draining:
            return
        try:
            for fill in fills:
                await self.act(self.strategy.on_fill(fill, self))
            if kind == BOOK:
                await self.act(self.strategy.on_book(obj, self))
        except Exception as exc:  # a strategy bug costs this event, not the loop
            self._error("strategy", f"{self.strategy.name} on {obj.venue} {obj.symbol}: {type(exc).__name__}: {exc}")

    @property
    def paper_venues(self) -> list[PaperVenue]:
        return list(self._paper_by_name.values())

    @property
    def paper_by_name(self) -> dict[str, PaperVenue]:
        return self._paper_by_name

    async def run(self, events: AsyncIterator[tuple[int, object]]) -> None:
        async for kind, obj in events:
            await self.handle(kind, obj)
            if self.stopping.is_set() or self.strategy.done:
                break

    async def journal_balances(self) -> None:
        """Each venue's balances as the venue reports them (the inventory plan and reconciliation read these)."""
        for name, venue in self.venues.items():
            try:
                raw = await venue.fetch_balance()
            except ExchangeError as exc:
                self._error("balance", f"{name}: {exc}")
                continue
            totals = raw.get("total") if isinstance(raw.get("total"), dict) else {
                asset: v["total"] for asset, v in raw.items() if isinstance(v, dict) and "total" in v}
            self.journal.append("balances", {"venue": name, "market_ts": self.now_ms,
                                             "total": {a: dec(v) for a, v in totals.items() if v is not None}})

    async def shutdown(self, reason: str) -> None:
        for venue in self.paper_venues:  # orders in flight reach the book as it last was
            venue.advance(self.now_ms + 3_600_000)
        await self.resolve_unknown()
        for name, venue in self.venues.items():  # a live venue's last fills, before the books close
            if hasattr(venue, "poll_trades"):
                try:
                    await venue.poll_trades(sorted({o.symbol for o in self.open.values() if o.venue == name}
                                                   | {s for v, s in self.instruments if v == name}))
                except ExchangeError as exc:
                    self._error("shutdown", f"{name}: last trades not fetched: {exc}")
        for cid in [c for c, o in self.open.items() if o.type == "limit"]:
            await self.cancel(cid, f"shutdown: {reason}")
        for name in self.venues:
            self._collect_venue(name)
        await self.journal_balances()
        net, fees = self.pnl_usd()
        self.journal.append_durable("stop", decimals({"reason": reason, "market_ts": self.now_ms,
                                                          "counters": dict(self.counters), "net_pnl_usd": net,
                                                          "fees_usd": fees}))

    def status(self) -> dict:
        net, fees = self.pnl_usd()
        return {
            "runtime_id": self.runtime_id, "mode": self.cfg.mode, "strategy": self.strategy.name, "role": self.role,
            "snapshot_id": self.snapshot.snapshot_id, "snapshot_error": self.snapshot_error,
            "market_data": self.market_data or (self.cfg.source if self.cfg.mode == "paper" else None),
            "paused": self.state.paused, "pause_reason": self.state.pause_reason,
            "market_time": iso_ms(self.now_ms) if self.now_ms else None,
            "uptime_s": round(time.monotonic() - self.started_wall, 3),
            "positions": [{"venue": v, "symbol": s, "amount": str(a)} for (v, s), a in sorted(self.positions.items())
                          if a != 0],
            "open_orders": [{"client_order_id": o.client_order_id, "venue": o.venue, "symbol": o.symbol,
                             "side": o.side, "type": o.type, "price": str(o.price), "amount": str(o.amount),
                             "filled": str(o.filled)} for o in self.open.values()],
            "pnl": {"net_usd": round(net, 6), "fees_usd": round(fees, 6), "gross_usd": round(net + fees, 6),
                    "today_usd": round(self.state.pnl_today_usd, 6)},
            "counters": dict(self.counters),
            "not_tradable": refusal_map(self.not_tradable),
            "journal": {"dir": str(self.journal.dir), "seq": self.journal.seq, "fsyncs": self.journal.fsyncs},
        }


def expected_slippage(book: Book, side: str, amount: float, tick: float) -> float:
    """Cost against mid, in quote, of taking `amount` through the book the paper venue models."""
    left, cost = amount, 0.0
    for price, size in book_levels(book, side, tick):
        take = min(left, size)
        cost += take * abs(price - book.mid)
        left -= take
        if left <= 0:
            break
    if left > 0:  # deeper than the modelled book: charge the last level's distance again
        cost += left * abs(price - book.mid) * 2
    return cost
