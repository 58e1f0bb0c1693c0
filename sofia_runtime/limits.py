"""Risk limits: every intent passes here after the gate. A breach blocks the order with a reason; it never
raises, so one bad order cannot stop the loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from sofia_runtime.gate import Intent


@dataclass(frozen=True)
class SymbolLimits:
    max_position: float  # base units, absolute
    max_notional_usd: float  # per order
    max_open_orders: int
    daily_loss_limit_usd: float


@dataclass
class RiskState:
    """What the engine knows that the limits depend on."""
    positions: dict[tuple[str, str], float] = field(default_factory=dict)  # (venue, symbol) -> base units
    open_orders: dict[tuple[str, str], int] = field(default_factory=dict)
    working: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # open [buy, sell] remaining
    pnl_today_usd: float = 0.0
    paused: bool = False
    pause_reason: str = ""


class Limits:
    def __init__(self, risk_limits: pl.DataFrame, stale_after_s: float, max_open_orders_total: int):
        self.by_key = {(r["venue"], r["symbol"]): SymbolLimits(r["max_position"], r["max_notional_usd"],
                                                               r["max_open_orders"], r["daily_loss_limit_usd"])
                       for r in risk_limits.iter_rows(named=True)}
        # the book's daily loss limit is the tightest of the per-symbol ones (the risk run scales them)
        self.daily_loss_limit_usd = min((v.daily_loss_limit_usd for v in self.by_key.values()), default=0.0)
        self.stale_after_s, self.max_open_orders_total = stale_after_s, max_open_orders_total

    def check(self, intent: Intent, state: RiskState, book_ages_s: list[float], notionals_usd: list[float]) -> str | None:
        """None when the intent may go out, else the reason it may not."""
        if state.paused:
            return f"paused: {state.pause_reason}"
        for leg, age in zip(intent.legs, book_ages_s):
            if age > self.stale_after_s:
                return f"stale data: {leg.venue} {leg.symbol} book is {age:.1f} s old (limit {self.stale_after_s} s)"
        if not intent.reduce_only and state.pnl_today_usd <= -self.daily_loss_limit_usd:
            return f"daily loss limit: P&L today {state.pnl_today_usd:.2f} USD, limit -{self.daily_loss_limit_usd:.2f}"
        total_open = sum(state.open_orders.values())
        for leg, notional in zip(intent.legs, notionals_usd):
            key = (leg.venue, leg.symbol)
            lim = self.by_key.get(key)
            if lim is None:
                return f"no risk limits for {leg.venue} {leg.symbol} in the snapshot"
            if notional > lim.max_notional_usd:
                return f"notional {notional:.2f} USD above {lim.max_notional_usd:.2f} for {leg.venue} {leg.symbol}"
            position = state.positions.get(key, 0.0)
            buying, selling = state.working.get(key, (0.0, 0.0))
            # the worst case: every open order on this side fills too
            after = position + buying + leg.amount if leg.side == "buy" else position - selling - leg.amount
            if abs(after) > lim.max_position and abs(after) > abs(position):
                return (f"position limit: {leg.venue} {leg.symbol} would go to {after:.8g}, "
                        f"limit ±{lim.max_position:.8g}")
            if leg.type == "limit":
                if state.open_orders.get(key, 0) >= lim.max_open_orders:
                    return f"max open orders {lim.max_open_orders} reached on {leg.venue} {leg.symbol}"
                if total_open >= self.max_open_orders_total:
                    return f"max open orders {self.max_open_orders_total} reached in total"
        return None
