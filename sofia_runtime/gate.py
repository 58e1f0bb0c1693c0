"""The EV gate (feature D): an order goes out only when its expected value, net of every cost, is above a
threshold.

    EV = p(fill) x (edge - fees - transaction tax - expected slippage) - (1 - p(fill)) x cost of not filling

for an intent of one or more legs that fill together (p is the product of the legs'): a maker leg's p(fill)
comes from the snapshot's fill model at the order's distance from mid, the mid's volatility and the
horizon; a taker leg fills for certain and pays the walk through the book as slippage. The strategy states
the intent's edge against mid; a maker leg's edge is charged the expected adverse selection. Amounts are in
USD; the decision carries every input so the journal can explain it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sofia_runtime.fill_model import FillParams, p_fill_scalar


@dataclass(frozen=True)
class Leg:
    venue: str
    symbol: str
    side: str
    type: str  # "limit" | "market"
    amount: float
    price: float | None  # limit price; None for a market order
    post_only: bool = False


@dataclass(frozen=True)
class Intent:
    strategy: str
    legs: tuple[Leg, ...]
    edge_usd: float  # what the intent earns before costs if every leg fills
    reason: str  # why the strategy wants it
    reduce_only: bool = False  # closes risk: passes whatever its EV, still journaled with it
    tag: str = ""
    hold_hours: float | None = None  # how long the position is meant to be held, where that matters


@dataclass(frozen=True)
class LegInputs:
    """What the gate knows about a leg's market when it decides."""
    mid: float
    spread: float
    vol: float
    usd_per_quote: float
    fee_rate: float
    tax_rate: float  # transaction tax on the sale amount, 0 for a buy
    slippage_quote: float  # expected cost of walking the book against mid, in quote (taker legs)
    fill_params: FillParams | None  # None: no fitted model for the venue, symbol and side


@dataclass(frozen=True)
class GateParams:
    threshold_usd: float
    miss_cost_bps: float
    adverse_selection_bps: float
    horizon_s: float


@dataclass
class Decision:
    passed: bool
    ev_usd: float
    p_fill: float
    edge_usd: float
    fees_usd: float
    tax_usd: float
    slippage_usd: float
    miss_cost_usd: float
    reason: str
    legs: list[dict] = field(default_factory=list)


def _leg_terms(type_: str, price: float, amount: float, x: LegInputs, params: GateParams):
    """(p_fill, distance in spreads, notional, adverse selection, fees, tax, slippage, cost of not filling) of one
    leg, money in USD; None for a limit leg without a fill model or a spread."""
    notional = price * amount * x.usd_per_quote
    if type_ == "market":
        p_leg, distance, adverse = 1.0, None, 0.0
    else:
        if x.fill_params is None or not (x.spread > 0):
            return None
        distance = abs(price - x.mid) / x.spread
        p_leg = p_fill_scalar(x.fill_params, distance, x.vol, params.horizon_s)
        adverse = notional * params.adverse_selection_bps / 1e4
    miss = notional * params.miss_cost_bps / 1e4 if type_ == "limit" else 0.0
    return (p_leg, distance, notional, adverse, notional * x.fee_rate, notional * x.tax_rate,
            x.slippage_quote * x.usd_per_quote, miss)


def evaluate(intent: Intent, inputs: list[LegInputs], params: GateParams) -> Decision:
    """The decision, with every leg's inputs and the reason."""
    p, fees, tax, slippage, miss, edge = 1.0, 0.0, 0.0, 0.0, 0.0, intent.edge_usd
    legs = []
    for leg, x in zip(intent.legs, inputs, strict=True):
        price = leg.price if leg.price is not None else x.mid
        terms = _leg_terms(leg.type, price, leg.amount, x, params)
        if terms is None:
            return _reject(intent, inputs, f"no fill model or spread for {leg.venue} {leg.symbol} {leg.side}")
        p_leg, distance, notional, adverse, leg_fees, leg_tax, leg_slippage, leg_miss = terms
        p *= p_leg
        edge -= adverse
        fees += leg_fees
        tax += leg_tax
        slippage += leg_slippage
        miss += leg_miss
        legs.append({"venue": leg.venue, "symbol": leg.symbol, "side": leg.side, "type": leg.type,
                     "price": price, "amount": leg.amount, "mid": x.mid, "spread": x.spread, "vol": x.vol,
                     "distance_spreads": distance, "p_fill": p_leg, "fee_rate": x.fee_rate,
                     "tax_rate": x.tax_rate, "notional_usd": notional})
    ev = p * (edge - fees - tax - slippage) - (1.0 - p) * miss
    if not math.isfinite(ev):
        return _reject(intent, inputs, "EV is not a number (missing market data)")
    if intent.reduce_only:
        passed, reason = True, f"reduce-only: closes risk whatever its EV ({ev:.4f} USD)"
    elif ev > params.threshold_usd:
        passed, reason = True, f"EV {ev:.4f} USD above threshold {params.threshold_usd}"
    else:
        passed, reason = False, f"EV {ev:.4f} USD not above threshold {params.threshold_usd}"
    return Decision(passed, ev, p, edge, fees, tax, slippage, miss, reason, legs)


def limit_order_ev(price: float, amount: float, edge_usd: float, x: LegInputs, params: GateParams) -> float:
    """The EV `evaluate` gives an intent of this one limit leg (NaN where it rejects), without building the intent:
    for a strategy comparing many candidate prices."""
    terms = _leg_terms("limit", price, amount, x, params)
    if terms is None:
        return math.nan
    p, _, _, adverse, fees, tax, slippage, miss = terms
    ev = p * (edge_usd - adverse - fees - tax - slippage) - (1.0 - p) * miss
    return ev if math.isfinite(ev) else math.nan


def _reject(intent: Intent, inputs: list[LegInputs], reason: str) -> Decision:
    return Decision(False, math.nan, math.nan, intent.edge_usd, math.nan, math.nan, math.nan, math.nan, reason)
