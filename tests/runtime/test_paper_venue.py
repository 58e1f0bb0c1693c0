"""The paper venue against a hand-made tape: queue position, partial fills, market orders walking the modelled
book, post-only, latency, every reject, fees, balances, and its record reloaded after a restart."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from decimal import Decimal as D

import numpy as np
import polars as pl
import pytest

from sofia_runtime.engine import expected_slippage
from sofia_runtime.exchange.base import InsufficientFunds, InvalidOrder, OrderNotFound
from sofia_runtime.exchange.paper import MarketSpec, PaperVenue
from sofia_runtime.fees import FeeSchedule
from sofia_runtime.marketdata import Books, TradeTick
from sofia_runtime.schemas import SERVING_TABLES

BTC, PERP = "BTC/USDT", "BTC/USDT:USDT"
SPEC = MarketSpec("binance", BTC, "spot", "BTC", "USDT", D("0.01"), D("0.00001"), D("0.0001"), D("5"))
PERP_SPEC = MarketSpec("binance", PERP, "perp", "BTC", "USDT", D("0.1"), D("0.001"), D("0.001"), D("5"))
FEES = FeeSchedule(SERVING_TABLES["fee_table"].conform(pl.DataFrame([
    {"venue": "binance", "symbol": s, "market": m, "tier": t, "min_volume_30d_usd": 0.0, "maker": mk, "taker": tk,
     "funding_interval_hours": None, "valid_from": date(2020, 1, 1), "valid_to": None, "source": "test",
     "selected": sel}
    for s, m, t, mk, tk, sel in ((BTC, "spot", "VIP0", 0.0002, 0.0005, True),
                                 (BTC, "spot", "VIP9", 0.0, 0.0001, False),  # not the desk's tier
                                 (PERP, "perp", "VIP0", 0.0001, 0.0004, True))]), "test"))
T0 = 1_795_132_800_000  # 2026-11-20 00:00 UTC
LATENCY_MS = 50


class Tape:
    """A venue on a hand-made tape: books set by hand, the clock moved by hand."""

    def __init__(self, path, balances=None):
        self.books = Books()
        self.now = T0
        self.path = path
        self.balances = balances or {"USDT": D("100000"), "BTC": D("2")}
        self.venue = self.open()

    def open(self) -> PaperVenue:
        return PaperVenue("binance", {BTC: SPEC, PERP: PERP_SPEC}, FEES, np.array([float(LATENCY_MS)]), self.path,
                          self.balances, books=lambda s: self.books.get("binance", s), clock=lambda: self.now)

    def book(self, bid, ask, bid_size, ask_size, symbol=BTC):
        book = self.books.get("binance", symbol)
        book.update(self.now, bid, ask, bid_size, ask_size)
        self.venue.on_book(book)
        return book

    def at(self, ms: int) -> None:
        """Move the clock to T0 + ms and let in-flight orders arrive."""
        self.now = T0 + ms
        self.venue.advance(self.now)

    def trade(self, side, price, amount, symbol=BTC):
        self.venue.on_trade(TradeTick("binance", symbol, self.now, side, price, amount))

    def place(self, side, amount, price=None, type="limit", cid=None, post_only=False, symbol=BTC) -> dict:
        params = {"clientOrderId": cid} if cid else {}
        if post_only:
            params["postOnly"] = True
        return asyncio.run(self.venue.create_order(symbol, type, side, D(amount), None if price is None else D(price),
                                                   params))

    def order(self, oid) -> dict:
        return asyncio.run(self.venue.fetch_order(oid))

    def balance(self) -> dict:
        return asyncio.run(self.venue.fetch_balance())


@pytest.fixture
def tape(tmp_path):
    t = Tape(tmp_path / "paper_venue" / "binance.jsonl")
    t.book(59990.0, 60010.0, 2.0, 1.5)
    return t


def fills(venue: PaperVenue) -> list[tuple]:
    return [(t["order"], t["side"], t["price"], t["amount"], t["takerOrMaker"]) for t in venue.drain_trades()]


def test_a_bid_joins_behind_the_size_shown_and_fills_only_after_it_traded(tape):
    o = tape.place("buy", "0.5", "59990", cid="q1", post_only=True)
    assert o["status"] == "open" and o["filled"] == 0
    tape.at(LATENCY_MS)
    tape.trade("sell", 59990.0, 1.5)  # 2.0 ahead of us: 0.5 left ahead
    assert fills(tape.venue) == []
    tape.trade("buy", 59990.0, 5.0)  # a buyer's trade never meets a bid
    assert fills(tape.venue) == []
    tape.trade("sell", 59990.0, 0.8)  # 0.5 clears the queue ahead, 0.3 reaches us
    assert fills(tape.venue) == [(o["id"], "buy", D("59990"), D("0.3"), "maker")]
    assert tape.order(o["id"])["status"] == "open" and tape.order(o["id"])["remaining"] == D("0.2")
    tape.trade("sell", 59990.0, 1.0)  # nobody ahead now
    assert fills(tape.venue) == [(o["id"], "buy", D("59990"), D("0.2"), "maker")]
    done = tape.order(o["id"])
    assert (done["status"], done["filled"], done["average"]) == ("closed", D("0.5"), D("59990"))


def test_a_trade_through_the_price_fills_at_once_at_the_order_price(tape):
    o = tape.place("buy", "0.5", "59990", post_only=True)
    tape.at(LATENCY_MS)
    tape.trade("sell", 59985.0, 0.7)  # below our bid: the 2.0 ahead at 59990 does not matter
    assert fills(tape.venue) == [(o["id"], "buy", D("59990"), D("0.5"), "maker")]


def test_partial_fill_when_the_trade_is_smaller_than_the_order(tape):
    o = tape.place("sell", "0.5", "60010", post_only=True)
    tape.at(LATENCY_MS)
    tape.trade("buy", 60015.0, 0.2)
    assert fills(tape.venue) == [(o["id"], "sell", D("60010"), D("0.2"), "maker")]
    state = tape.order(o["id"])
    assert (state["status"], state["filled"], state["remaining"]) == ("open", D("0.2"), D("0.3"))


def test_a_book_moving_through_a_resting_order_fills_it(tape):
    o = tape.place("buy", "0.5", "59990", post_only=True)
    tape.at(LATENCY_MS)
    tape.at(1000)
    tape.book(59970.0, 59985.0, 1.0, 0.4)  # the ask came down through our bid: 0.4 shown there
    assert fills(tape.venue) == [(o["id"], "buy", D("59990"), D("0.4"), "maker")]


def test_an_order_inside_the_spread_is_first_in_line(tape):
    o = tape.place("buy", "0.1", "60000", post_only=True)
    tape.at(LATENCY_MS)
    tape.trade("sell", 60000.0, 0.05)
    assert fills(tape.venue) == [(o["id"], "buy", D("60000"), D("0.05"), "maker")]


def test_a_bid_one_level_behind_the_touch_waits_for_two_levels(tape):
    # 59970 is one spread (20) below the bid: ahead = 2.0 * (1 + 1) = 4.0
    o = tape.place("buy", "0.1", "59970", post_only=True)
    tape.at(LATENCY_MS)
    tape.trade("sell", 59970.0, 3.9)
    assert fills(tape.venue) == []
    tape.trade("sell", 59970.0, 0.2)
    assert fills(tape.venue) == [(o["id"], "buy", D("59970"), D("0.1"), "maker")]


def test_market_order_walks_the_modelled_book(tape):
    # asks: level k at 60010 + k * max(spread 20, tick), size (k + 1) * 1.5
    tape.book(59990.0, 60010.0, 2.0, 0.3)  # top ask size 0.3: levels 0.3 @ 60010, 0.6 @ 60030, 0.9 @ 60050 ...
    o = tape.place("buy", "1.0", type="market")
    tape.at(LATENCY_MS)
    got = fills(tape.venue)
    assert got == [(o["id"], "buy", D("60010"), D("0.3"), "taker"), (o["id"], "buy", D("60030"), D("0.6"), "taker"),
                   (o["id"], "buy", D("60050"), D("0.1"), "taker")]
    vwap = (D("60010") * D("0.3") + D("60030") * D("0.6") + D("60050") * D("0.1")) / 1
    assert vwap == D("60026")
    state = tape.order(o["id"])
    assert (state["status"], state["filled"], state["average"]) == ("closed", D("1.0"), D("60026"))
    # the engine's expected slippage uses the same levels: against mid 60000, 0.3*10 + 0.6*30 + 0.1*50 = 26
    book = tape.books.get("binance", BTC)
    assert expected_slippage(book, "buy", 1.0, 0.01) == pytest.approx(26.0)


def test_market_order_deeper_than_the_book_is_cut_off(tape):
    # bids 0.1 at 59990, 0.2 at 59970, ... 0.5 at 59910: 1.5 in all
    tape.book(59990.0, 60010.0, 0.1, 1.0)
    o = tape.place("sell", "1.8", type="market")
    tape.at(LATENCY_MS)
    got = fills(tape.venue)
    assert [(p, a) for _, _, p, a, _ in got] == [(D(59990 - 20 * k), D("0.1") * (k + 1)) for k in range(5)]
    state = tape.order(o["id"])
    assert (state["status"], state["filled"], state["reason"]) == ("closed", D("1.5"), "book exhausted")


def test_post_only_that_would_take_is_cancelled_on_arrival(tape):
    o = tape.place("buy", "0.1", "60010", post_only=True)  # at the ask
    tape.at(LATENCY_MS)
    state = tape.order(o["id"])
    assert state["status"] == "canceled" and state["reason"] == "post-only order would take liquidity"
    assert fills(tape.venue) == [] and [c["id"] for c in tape.venue.drain_closed_orders()] == [o["id"]]
    # the same price without post-only takes the ask
    t = tape.place("buy", "0.1", "60010")
    tape.at(2 * LATENCY_MS)
    assert fills(tape.venue) == [(t["id"], "buy", D("60010"), D("0.1"), "taker")]


def test_an_order_is_not_at_the_venue_before_its_latency_has_passed(tape):
    o = tape.place("buy", "0.5", "59990", post_only=True)
    tape.at(LATENCY_MS - 1)
    assert tape.venue.pending == [o["id"]]
    tape.trade("sell", 59900.0, 1.0)  # would fill it if it were there
    assert fills(tape.venue) == []
    tape.at(LATENCY_MS)
    assert tape.venue.pending == []
    tape.trade("sell", 59900.0, 1.0)
    assert fills(tape.venue) == [(o["id"], "buy", D("59990"), D("0.5"), "maker")]


def test_an_order_arrives_against_the_book_of_its_arrival_time(tape):
    o = tape.place("buy", "0.1", "60000", post_only=True)  # inside the spread when sent
    tape.now = T0 + 20
    tape.book(60005.0, 60025.0, 1.0, 1.0)  # the book moved up: 60000 now rests behind the 1.0 bid at 60005
    tape.at(LATENCY_MS)
    assert tape.order(o["id"])["status"] == "open" and tape.venue.orders[o["id"]]["_ahead"] == pytest.approx(1.0)


@pytest.mark.parametrize("side, amount, price, type, message", [
    ("buy", "0.1", "59990.005", "limit", "price 59990.005 is not a multiple of the tick 0.01"),
    ("buy", "0.100005", "59990", "limit", "amount 0.100005 is not a multiple of the step 0.00001"),
    ("buy", "0.00005", "59990", "limit", "amount 0.00005 is below the minimum 0.0001"),
    ("buy", "0.0001", "40000", "limit", "notional 4.0000 is below the minimum 5"),
    ("buy", "0.1", None, "stop", "bad side/type buy/stop"),
    ("buy", "0.1", None, "limit", "a limit order needs a positive price"),
])
def test_invalid_orders_are_rejected_with_the_reason(tape, side, amount, price, type, message):
    with pytest.raises(InvalidOrder) as err:
        tape.place(side, amount, price, type=type)
    assert message in str(err.value)
    assert tape.venue.orders == {}


def test_minimum_notional_of_a_market_order_uses_the_touch(tape):
    tape.book(49990.0, 50010.0, 1.0, 1.0)
    with pytest.raises(InvalidOrder, match="notional 4.999"):
        tape.place("sell", "0.0001", type="market")  # 0.0001 * bid 49990 = 4.999 < 5
    tape.place("buy", "0.0001", type="market")  # 0.0001 * ask 50010 = 5.001 >= 5


def test_unknown_market_is_rejected(tape):
    with pytest.raises(InvalidOrder, match="no market ETH/USDT"):
        asyncio.run(tape.venue.create_order("ETH/USDT", "limit", "buy", D("1"), D("3000")))


def test_spot_buy_needs_the_quote_including_what_resting_bids_hold(tape):
    with pytest.raises(InsufficientFunds, match="USDT needed"):
        tape.place("buy", "2", "59990")  # 119,980 USDT > 100,000
    tape.place("buy", "1.5", "59000", post_only=True)  # rests, holds 88,500
    # 0.2 * 59000 * (1 + taker 0.0005) = 11805.9 > 11,500 free, although 100,000 is there
    with pytest.raises(InsufficientFunds, match=r"11805\.9.* needed, 11500\.0* free"):
        tape.place("buy", "0.2", "59000")
    tape.place("buy", "0.19", "59000")  # 11,215.6 fits


def test_spot_sell_needs_the_base_including_what_resting_asks_hold(tape):
    with pytest.raises(InsufficientFunds, match="sells 2.5 BTC, 2 free"):
        tape.place("sell", "2.5", "60100")
    o = tape.place("sell", "1.5", "61000", post_only=True)
    with pytest.raises(InsufficientFunds, match="sells 0.6 BTC, 0.5 free"):
        tape.place("sell", "0.6", "61000")
    tape.place("sell", "0.5", "61000")
    asyncio.run(tape.venue.cancel_order(o["id"], BTC))  # a cancelled order holds nothing
    tape.place("sell", "1.5", "61000")


def test_perp_needs_free_quote_for_the_initial_margin(tmp_path):
    tape = Tape(tmp_path / "v.jsonl", {"USDT": D("1000")})
    tape.book(59990.0, 60010.0, 2.0, 2.0, symbol=PERP)
    with pytest.raises(InsufficientFunds, match="margin 1200.2"):  # 0.2 * 60010 * 10 %
        tape.place("buy", "0.2", type="market", symbol=PERP)
    tape.place("sell", "0.1", "60100", symbol=PERP)  # 601 margin: no BTC needed to go short


def test_fees_maker_and_taker_from_the_selected_tier_and_balances_after_fills(tape):
    maker = tape.place("buy", "0.5", "59990", post_only=True)
    taker = tape.place("sell", "0.2", type="market")
    tape.at(LATENCY_MS)
    tape.trade("sell", 59980.0, 1.0)
    trades = {t["order"]: t for t in tape.venue.drain_trades()}
    m, t = trades[maker["id"]], trades[taker["id"]]
    assert (m["takerOrMaker"], m["fee"]) == ("maker", {"cost": D("5.99900000"), "currency": "USDT"})  # 29995 * 2 bps
    assert (t["takerOrMaker"], t["price"], t["fee"]) == ("taker", D("59990"), {"cost": D("5.99900000"),
                                                                              "currency": "USDT"})  # 11998 * 5 bps
    bal = tape.balance()
    assert bal["BTC"]["total"] == D("2") + D("0.5") - D("0.2")
    assert bal["USDT"]["total"] == D("100000") - D("29995") - D("5.999") + D("11998") - D("5.999")
    assert bal["USDT"]["used"] == 0 and bal["USDT"]["free"] == bal["USDT"]["total"]
    assert tape.order(maker["id"])["fee"]["cost"] == D("5.999")


def test_cancel_and_unknown_orders(tape):
    o = tape.place("buy", "0.1", "59000", post_only=True)
    assert tape.balance()["USDT"]["used"] == D("5900")
    cancelled = asyncio.run(tape.venue.cancel_order(o["id"], BTC))
    assert cancelled["status"] == "canceled" and tape.balance()["USDT"]["used"] == 0
    with pytest.raises(OrderNotFound, match="is canceled, not open"):
        asyncio.run(tape.venue.cancel_order(o["id"], BTC))
    with pytest.raises(OrderNotFound):
        asyncio.run(tape.venue.cancel_order("binance-999", BTC))
    tape.at(LATENCY_MS)
    tape.trade("sell", 58000.0, 5.0)
    assert fills(tape.venue) == []  # a cancelled order never fills, even one still in flight


def test_the_venue_record_reloads_orders_trades_and_balances(tape):
    filled = tape.place("buy", "0.5", "59990", cid="sf-1-0", post_only=True)
    resting = tape.place("sell", "0.3", "60050", cid="sf-2-0", post_only=True)
    in_flight_cid = "sf-3-0"
    tape.at(LATENCY_MS)
    tape.trade("sell", 59980.0, 0.2)  # partial
    tape.now = T0 + 60
    in_flight = tape.place("buy", "0.1", "59900", cid=in_flight_cid, post_only=True)  # arrives at +110
    before = {oid: tape.order(oid) for oid in tape.venue.orders}
    trades_before = asyncio.run(tape.venue.fetch_my_trades())
    balances_before = tape.balance()

    again = tape.open()  # a restarted runtime opens the same record
    assert {oid: asyncio.run(again.fetch_order(oid)) for oid in again.orders} == before
    assert asyncio.run(again.fetch_my_trades()) == trades_before and len(trades_before) == 1
    assert asyncio.run(again.fetch_balance()) == balances_before
    assert asyncio.run(again.find_order("sf-1-0"))["id"] == filled["id"]
    assert asyncio.run(again.find_order("sf-2-0"))["id"] == resting["id"]
    assert asyncio.run(again.find_order("sf-404")) is None
    assert again.pending == [in_flight["id"]] and again._resting[BTC] == [filled["id"], resting["id"]]
    with pytest.raises(InvalidOrder, match="duplicate clientOrderId sf-1-0"):
        asyncio.run(again.create_order(BTC, "limit", "buy", D("0.1"), D("59000"), {"clientOrderId": "sf-1-0"}))
    # the reloaded venue carries on: a new order gets a new id, trades keep their numbering, the in-flight arrives
    tape.venue = again
    new = tape.place("buy", "0.1", "59000", cid="sf-4-0")
    assert new["id"] not in before
    tape.at(200)
    tape.trade("sell", 59890.0, 1.0)
    ids = [t["id"] for t in asyncio.run(again.fetch_my_trades())]
    assert len(ids) == len(set(ids)) == 3  # 0.2 before, 0.3 rest of the first bid, 0.1 in-flight bid
    lines = [json.loads(x) for x in tape.path.read_text().splitlines()]
    assert lines[0] == {"t": "open", "balances": {"USDT": "100000", "BTC": "2"}}
    assert sum(1 for x in lines if x["t"] == "trade") == 3


def test_a_torn_last_line_never_reached_the_venue(tape):
    tape.place("buy", "0.1", "59000", cid="sf-1-0")
    with tape.path.open("a") as f:
        f.write('{"t":"order","order":{"id":"binance-2"')  # the crash cut the line
    again = tape.open()
    assert list(again.orders) == ["binance-1"]
