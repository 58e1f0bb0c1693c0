"""Router (feature A): executes one parent order (`buy 0.5 BTC/USDT`) in market child orders on the venue the
route table names for the hour, each through the gate; the edge of a child is what the desk is willing to
pay to execute (`max_cost_bps`), so a child goes out only while the venue's all-in cost is below that."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sofia_runtime.gate import Intent, Leg
from sofia_runtime.marketdata import Book
from sofia_runtime.routing import Route, Router as RouteTable
from sofia_runtime.strategies.base import Action, Strategy

ORDER_RE = re.compile(r"^\s*(buy|sell)\s+([0-9]*\.?[0-9]+)\s+(\S+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ParentOrder:
    side: str
    amount: float
    symbol: str


def parse_order(text: str) -> ParentOrder:
    m = ORDER_RE.match(text or "")
    if not m:
        raise ValueError(f'--order {text!r}: expected "<buy|sell> <amount> <symbol>", e.g. "buy 0.5 BTC/USDT"')
    return ParentOrder(m.group(1).lower(), float(m.group(2)), m.group(3))


class RouterStrategy(Strategy):
    name = "router"

    def __init__(self, config):
        if not config.router.order:
            raise ValueError('the router needs a parent order: --order "buy 0.5 BTC/USDT"')
        self.cfg = config.router
        self.parent = parse_order(config.router.order)
        self.filled = 0.0
        self.in_flight = False
        self.table: RouteTable | None = None

    def instruments(self, ctx) -> set[tuple[str, str]]:
        self.table = RouteTable(ctx.snapshot.tables["route_table"])
        return {(v, self.parent.symbol) for v in ctx.venues if ctx.has_market(v, self.parent.symbol)}

    def restore(self, records: list[dict], ctx) -> None:
        for rec in records:
            if rec["kind"] == "fill" and rec["payload"].get("strategy") == self.name:
                self.filled += float(rec["payload"]["amount"])

    @property
    def remaining(self) -> float:
        return self.parent.amount - self.filled

    @property
    def done(self) -> bool:
        return self.remaining <= 1e-12

    def on_book(self, book: Book, ctx) -> list[Action]:
        if self.done or self.in_flight or book.symbol != self.parent.symbol:
            return []
        if ctx.cfg.venue:  # one venue named on the command line (always so in live mode)
            route = Route(ctx.cfg.venue, math.nan, f"venue fixed by --venue {ctx.cfg.venue}")
        else:
            route = self.table.route(self.parent.symbol, self.parent.side, ctx.hour, ctx.venues)
        if route is None or route.venue != book.venue or not book.valid:
            return []
        spec = ctx.spec(book.venue, book.symbol)
        usd = ctx.usd_per_quote(book.venue, book.symbol)
        amount = float(spec.round_amount(min(self.remaining, self.cfg.child_usd / usd / book.mid)))
        if amount < float(spec.min_amount) or amount * book.mid < float(spec.min_notional):
            self.filled = self.parent.amount  # what is left is below the venue's minimum amount or notional
            return []
        edge = amount * book.mid * usd * self.cfg.max_cost_bps / 1e4
        self.in_flight = True
        return [Intent(self.name, (Leg(book.venue, book.symbol, self.parent.side, "market", amount, None),),
                       edge, f"child of {self.parent.side} {self.parent.amount:g} {self.parent.symbol}: {route.why}, "
                             f"route cost {route.cost_bps:.2f} bps", tag="child")]

    def on_decision(self, intent: Intent, passed: bool, ctx) -> None:
        if not passed:
            self.in_flight = False

    def on_order_closed(self, order: dict, ctx) -> None:
        self.in_flight = False

    def on_fill(self, fill: dict, ctx) -> list[Action]:
        self.filled += float(fill["amount"])
        return []
