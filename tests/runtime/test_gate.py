"""The EV gate and the risk limits on hand-computed cases.

Every expected number is worked out here from the documented formulas with the literal inputs, not by calling
the code under test:

    p(fill) = 1 - exp(-A * exp(-k * d) * (vol / vol_ref) ** beta * h)        d = |price - mid| / spread
    EV      = p * (edge - adverse - fees - tax - slippage) - (1 - p) * miss
"""

from __future__ import annotations

import math

import polars as pl
import pytest

from sofia_runtime.fill_model import FillParams
from sofia_runtime.gate import GateParams, Intent, Leg, LegInputs, evaluate
from sofia_runtime.limits import Limits, RiskState
from sofia_runtime.schemas import SERVING_TABLES

MODEL = FillParams(intensity_a=0.05, decay_k=0.8, vol_ref=0.0005, vol_exponent=0.5)
PARAMS = GateParams(threshold_usd=0.0, miss_cost_bps=0.5, adverse_selection_bps=1.0, horizon_s=30.0)


def inputs(mid=60000.0, spread=20.0, vol=0.001, usd=1.0, fee=0.0002, tax=0.0, slip=0.0, model=MODEL) -> LegInputs:
    return LegInputs(mid, spread, vol, usd, fee, tax, slip, model)


# --- the gate -----------------------------------------------------------------------------------------------


def test_maker_leg_ev_by_hand():
    # sell 0.1 at 60030 against mid 60000, spread 20: 1.5 spreads from mid; vol twice vol_ref
    leg = Leg("binance", "BTC/USDT", "sell", "limit", 0.1, 60030.0, post_only=True)
    intent = Intent("t", (leg,), edge_usd=3.0, reason="30 USD from mid on 0.1 BTC")
    d = inputs(fee=0.0002, tax=0.0001)
    decision = evaluate(intent, [d], PARAMS)

    p = 1 - math.exp(-0.05 * math.exp(-0.8 * 1.5) * (0.001 / 0.0005) ** 0.5 * 30)
    assert p == pytest.approx(0.4721427592, abs=1e-9)
    notional = 60030.0 * 0.1  # 6003 USD
    adverse, fees, tax, miss = notional * 1.0 / 1e4, notional * 0.0002, notional * 0.0001, notional * 0.5 / 1e4
    assert (adverse, fees, tax, miss) == pytest.approx((0.6003, 1.2006, 0.6003, 0.30015))
    ev = p * (3.0 - adverse - fees - tax - 0.0) - (1 - p) * miss
    assert ev == pytest.approx(0.12428273, abs=1e-7)

    assert decision.passed and decision.reason == f"EV {ev:.4f} USD above threshold 0.0"
    assert decision.p_fill == pytest.approx(p, rel=1e-12)
    assert decision.ev_usd == pytest.approx(ev, rel=1e-9)
    assert decision.edge_usd == pytest.approx(3.0 - adverse)  # the maker leg's edge is charged adverse selection
    assert (decision.fees_usd, decision.tax_usd, decision.slippage_usd, decision.miss_cost_usd) == pytest.approx(
        (fees, tax, 0.0, miss))
    (row,) = decision.legs
    assert row["distance_spreads"] == pytest.approx(1.5) and row["notional_usd"] == pytest.approx(6003.0)
    assert row["p_fill"] == pytest.approx(p, rel=1e-12)


def test_maker_leg_too_close_to_pay_its_costs_is_rejected():
    # buy 0.1 at 59990: 0.5 spreads from mid (at the touch), edge 1 USD, fees alone 1.1998 USD
    leg = Leg("binance", "BTC/USDT", "buy", "limit", 0.1, 59990.0, post_only=True)
    decision = evaluate(Intent("t", (leg,), 1.0, "touch"), [inputs()], PARAMS)
    p = 1 - math.exp(-0.05 * math.exp(-0.8 * 0.5) * 2 ** 0.5 * 30)
    notional = 5999.0
    ev = p * (1.0 - notional * 1e-4 - notional * 0.0002) - (1 - p) * notional * 0.5e-4
    assert ev == pytest.approx(-0.67914, abs=1e-5)
    assert not decision.passed and decision.ev_usd == pytest.approx(ev, rel=1e-9)
    assert decision.reason == f"EV {ev:.4f} USD not above threshold 0.0"


def test_taker_leg_fills_for_certain_and_pays_slippage():
    # market buy 0.5 at mid 60000: notional 30000 USD, taker 5 bps = 15 USD, slippage 4 USDT, no miss cost
    leg = Leg("binance", "BTC/USDT", "buy", "market", 0.5, None)
    decision = evaluate(Intent("t", (leg,), 25.0, "urgent"), [inputs(fee=0.0005, slip=4.0)], PARAMS)
    assert decision.passed
    assert decision.p_fill == 1.0 and decision.miss_cost_usd == 0.0
    assert decision.fees_usd == pytest.approx(15.0) and decision.slippage_usd == pytest.approx(4.0)
    assert decision.edge_usd == 25.0  # no adverse selection charged to a taker
    assert decision.ev_usd == pytest.approx(25.0 - 15.0 - 4.0)
    assert decision.legs[0]["distance_spreads"] is None and decision.legs[0]["price"] == 60000.0


def test_slippage_and_fees_in_a_non_usd_quote_are_converted():
    # a TRY-quoted market: 1 TRY = 1/40 USD; slippage 400 TRY = 10 USD, notional 2,400,000 TRY * 0.1 = 6000 USD
    leg = Leg("btcturk", "BTC/TRY", "buy", "market", 0.1, None)
    decision = evaluate(Intent("t", (leg,), 20.0, "x"), [inputs(mid=2_400_000.0, usd=1 / 40, fee=0.001, slip=400.0)],
                        PARAMS)
    assert decision.legs[0]["notional_usd"] == pytest.approx(6000.0)
    assert decision.fees_usd == pytest.approx(6.0) and decision.slippage_usd == pytest.approx(10.0)
    assert decision.ev_usd == pytest.approx(20.0 - 6.0 - 10.0)


def test_two_legs_multiply_p_and_add_costs():
    buy = Leg("binance", "BTC/USDT", "buy", "limit", 0.1, 59980.0, post_only=True)  # 1 spread below mid
    sell = Leg("okx", "BTC/USDT", "sell", "limit", 0.1, 60040.0, post_only=True)  # 2 spreads above mid
    intent = Intent("t", (buy, sell), edge_usd=6.0, reason="both or neither")
    decision = evaluate(intent, [inputs(fee=0.0002), inputs(fee=0.0001, tax=0.0002)], PARAMS)

    p1 = 1 - math.exp(-0.05 * math.exp(-0.8 * 1.0) * 2 ** 0.5 * 30)
    p2 = 1 - math.exp(-0.05 * math.exp(-0.8 * 2.0) * 2 ** 0.5 * 30)
    n1, n2 = 5998.0, 6004.0
    edge = 6.0 - n1 * 1e-4 - n2 * 1e-4
    fees = n1 * 0.0002 + n2 * 0.0001
    tax = n2 * 0.0002
    miss = (n1 + n2) * 0.5e-4
    p = p1 * p2
    assert (p1, p2) == pytest.approx((0.61448, 0.34838), abs=1e-5)
    assert decision.p_fill == pytest.approx(p, rel=1e-12)
    assert [leg["p_fill"] for leg in decision.legs] == pytest.approx([p1, p2], rel=1e-12)
    assert decision.edge_usd == pytest.approx(edge)
    assert (decision.fees_usd, decision.tax_usd, decision.miss_cost_usd) == pytest.approx((fees, tax, miss))
    assert decision.ev_usd == pytest.approx(p * (edge - fees - tax) - (1 - p) * miss, rel=1e-9)
    assert decision.ev_usd == pytest.approx(-0.08652, abs=1e-5) and not decision.passed


def test_exactly_at_threshold_is_rejected_just_below_passes():
    leg = Leg("binance", "BTC/USDT", "buy", "market", 0.5, None)
    x = inputs(fee=0.0005, slip=4.0)
    ev = evaluate(Intent("t", (leg,), 25.0, "x"), [x], PARAMS).ev_usd  # 6 USD
    at = GateParams(ev, PARAMS.miss_cost_bps, PARAMS.adverse_selection_bps, PARAMS.horizon_s)
    decision = evaluate(Intent("t", (leg,), 25.0, "x"), [x], at)
    assert not decision.passed and "not above threshold" in decision.reason
    below = GateParams(ev - 1e-9, PARAMS.miss_cost_bps, PARAMS.adverse_selection_bps, PARAMS.horizon_s)
    assert evaluate(Intent("t", (leg,), 25.0, "x"), [x], below).passed


def test_reduce_only_passes_with_negative_ev_and_says_so():
    leg = Leg("binance", "BTC/USDT", "sell", "market", 0.5, None)
    decision = evaluate(Intent("t", (leg,), 0.0, "close", reduce_only=True), [inputs(fee=0.0005, slip=4.0)], PARAMS)
    assert decision.ev_usd == pytest.approx(-19.0)
    assert decision.passed and decision.reason.startswith("reduce-only") and "-19.0000" in decision.reason
    same_not_reducing = evaluate(Intent("t", (leg,), 0.0, "open"), [inputs(fee=0.0005, slip=4.0)], PARAMS)
    assert not same_not_reducing.passed


def test_missing_fill_model_or_market_data_is_rejected_with_a_reason():
    leg = Leg("okx", "BTC/USDT:USDT", "buy", "limit", 0.1, 59980.0, post_only=True)
    decision = evaluate(Intent("t", (leg,), 5.0, "x"), [inputs(model=None)], PARAMS)
    assert not decision.passed and math.isnan(decision.ev_usd)
    assert decision.reason == "no fill model or spread for okx BTC/USDT:USDT buy"
    no_book = evaluate(Intent("t", (leg,), 5.0, "x"), [inputs(spread=math.nan)], PARAMS)
    assert not no_book.passed and "no fill model or spread" in no_book.reason
    market = Leg("okx", "BTC/USDT", "buy", "market", 0.1, None)
    no_mid = evaluate(Intent("t", (market,), 5.0, "x"), [inputs(mid=math.nan)], PARAMS)
    assert not no_mid.passed and no_mid.reason == "EV is not a number (missing market data)"
    # reduce-only does not override missing data
    assert not evaluate(Intent("t", (market,), 0.0, "x", reduce_only=True), [inputs(mid=math.nan)], PARAMS).passed


# --- risk limits ----------------------------------------------------------------------------------------------

RISK = SERVING_TABLES["risk_limits"].conform(pl.DataFrame([
    {"venue": "binance", "symbol": "BTC/USDT", "max_position": 1.0, "max_notional_usd": 100_000.0,
     "max_open_orders": 4, "daily_loss_limit_usd": 1000.0},
    {"venue": "okx", "symbol": "BTC/USDT", "max_position": 2.0, "max_notional_usd": 50_000.0,
     "max_open_orders": 2, "daily_loss_limit_usd": 3000.0},
]), "test")
BN = ("binance", "BTC/USDT")


def limits(total=40) -> Limits:
    return Limits(RISK, stale_after_s=5.0, max_open_orders_total=total)


def one(side="buy", amount=0.1, type="limit", venue="binance", reduce_only=False) -> Intent:
    price = 60000.0 if type == "limit" else None
    return Intent("t", (Leg(venue, "BTC/USDT", side, type, amount, price, post_only=type == "limit"),), 1.0, "x",
                  reduce_only=reduce_only)


def test_limits_pass_a_plain_order():
    assert limits().check(one(), RiskState(), [0.5], [6000.0]) is None


def test_paused_blocks_and_names_the_pause():
    state = RiskState(paused=True, pause_reason="latency spike (by ops)")
    assert limits().check(one(), state, [0.5], [6000.0]) == "paused: latency spike (by ops)"
    assert limits().check(one(reduce_only=True), state, [0.5], [6000.0]).startswith("paused")


def test_stale_book_blocks():
    reason = limits().check(one(), RiskState(), [5.5], [6000.0])
    assert reason == "stale data: binance BTC/USDT book is 5.5 s old (limit 5.0 s)"
    assert limits().check(one(), RiskState(), [5.0], [6000.0]) is None
    assert "stale data" in limits().check(one(), RiskState(), [math.inf], [6000.0])  # never seen a book


def test_daily_loss_uses_the_tightest_limit_and_lets_reducing_orders_through():
    assert limits().daily_loss_limit_usd == 1000.0
    state = RiskState(pnl_today_usd=-1000.0)
    assert limits().check(one(), state, [0.5], [6000.0]) == "daily loss limit: P&L today -1000.00 USD, limit -1000.00"
    assert limits().check(one(reduce_only=True), state, [0.5], [6000.0]) is None
    assert limits().check(one(), RiskState(pnl_today_usd=-999.99), [0.5], [6000.0]) is None


def test_notional_above_the_symbol_limit_blocks():
    reason = limits().check(one(venue="okx"), RiskState(), [0.5], [50_000.01])
    assert reason == "notional 50000.01 USD above 50000.00 for okx BTC/USDT"
    assert limits().check(one(venue="okx"), RiskState(), [0.5], [50_000.0]) is None


def test_position_limit_counts_working_orders_on_the_same_side():
    # position 0.8 plus 0.15 working buys: another 0.1 buy could take it to 1.05 > 1.0
    state = RiskState(positions={BN: 0.8}, working={BN: [0.15, 0.5]})
    assert limits().check(one("buy", 0.1), state, [0.5], [6000.0]) == (
        "position limit: binance BTC/USDT would go to 1.05, limit ±1")
    assert limits().check(one("buy", 0.1), RiskState(positions={BN: 0.8}), [0.5], [6000.0]) is None
    # selling reduces risk even with working sells: 0.8 - 0.5 - 0.1
    assert limits().check(one("sell", 0.1), state, [0.5], [6000.0]) is None
    # short side: -0.95 with 0.5 working sells, another sell of 0.1 -> -1.55
    short = RiskState(positions={BN: -0.95}, working={BN: [0.0, 0.5]})
    assert "would go to -1.55" in limits().check(one("sell", 0.1), short, [0.5], [6000.0])
    # already beyond the limit (e.g. the snapshot tightened it): an order that reduces it still goes
    beyond = RiskState(positions={BN: 1.5})
    assert limits().check(one("sell", 0.2, type="market"), beyond, [0.5], [6000.0]) is None


def test_max_open_orders_per_symbol_and_in_total_for_resting_orders():
    full = RiskState(open_orders={BN: 4})
    assert limits().check(one(), full, [0.5], [6000.0]) == "max open orders 4 reached on binance BTC/USDT"
    assert limits().check(one(type="market"), full, [0.5], [6000.0]) is None  # a market order does not rest
    assert limits().check(one(), RiskState(open_orders={BN: 3}), [0.5], [6000.0]) is None
    total = RiskState(open_orders={("okx", "BTC/USDT"): 1, BN: 2})
    assert limits(total=3).check(one(), total, [0.5], [6000.0]) == "max open orders 3 reached in total"


def test_symbol_without_limits_is_blocked():
    intent = Intent("t", (Leg("kraken", "BTC/USDT", "buy", "market", 0.1, None),), 1.0, "x")
    assert limits().check(intent, RiskState(), [0.5], [6000.0]) == "no risk limits for kraken BTC/USDT in the snapshot"


def test_every_leg_is_checked():
    ok = Leg("binance", "BTC/USDT", "buy", "market", 0.1, None)
    too_big = Leg("okx", "BTC/USDT", "sell", "market", 0.1, None)
    reason = limits().check(Intent("t", (ok, too_big), 1.0, "x"), RiskState(), [0.5, 0.5], [6000.0, 60_000.0])
    assert reason == "notional 60000.00 USD above 50000.00 for okx BTC/USDT"
    reason = limits().check(Intent("t", (ok, too_big), 1.0, "x"), RiskState(), [0.5, 9.0], [6000.0, 6000.0])
    assert reason.startswith("stale data: okx BTC/USDT")
