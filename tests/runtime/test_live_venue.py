"""The live adapter against a fake Binance on 127.0.0.1: signed requests, the order life cycle, trades, retries
that never duplicate an order, errors that are never retried, keys that never leak, live preconditions."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from fake_binance import running_fake_binance
from sofia_runtime.exchange import base
from sofia_runtime.exchange.live import (AuthenticationError, LiveVenue, keys_from_env, live_events,
                                         live_preconditions, stream_method_for)
from sofia_runtime.marketdata import Books

KEY, SECRET = "KEY-7f3a9c1e5b", "SECRET-d41d8cd98f00b204"
BTC = "BTC/USDT"


@pytest.fixture
def fake():
    with running_fake_binance(KEY, SECRET, stream=True) as server:
        yield server


def run(fake, body, key=KEY, secret=SECRET, **kw):
    """Run body(venue) against the fake server with a fresh adapter, closed afterwards. Rate limiting stays on but
    paced 10x faster than binance's 50 ms per weight unit, to keep the tests quick."""
    kw = {"backoff_s": 0.01, "rate_limit_ms": 5, **kw}

    async def main():
        venue = LiveVenue.for_local_server("binance", fake.base_url, key, secret,
                                           ws_url=getattr(fake, "stream_url", None), **kw)
        venue._ex.timeout_on_exit = 0  # ccxt sleeps 250 ms on close to let TLS sockets wind down: none here
        if venue._ws_url:
            venue._streamer().timeout_on_exit = 0
        try:
            return await body(venue)
        finally:
            await venue.close()
    return asyncio.run(main())


def test_signed_requests_accepted_and_bad_keys_refused(fake):
    balance = run(fake, lambda v: v.fetch_balance())
    assert balance["USDT"]["free"] == 100000 and balance["BTC"]["total"] == 1
    for key, secret in ((KEY, "wrong-secret"), ("wrong-key", SECRET)):
        with pytest.raises(AuthenticationError) as err:
            run(fake, lambda v: v.fetch_balance(), key=key, secret=secret)
        assert isinstance(err.value, base.ExchangeError) and not isinstance(err.value, base.NetworkError)
    assert fake.count("GET", "/api/v3/account") == 3


def test_limit_order_rests_shows_open_and_cancels(fake):
    async def body(v):
        order = await v.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "sofia-limit-1"})
        opened = await v.fetch_open_orders(BTC)
        canceled = await v.cancel_order(order["id"], BTC)
        return order, opened, canceled, await v.fetch_open_orders(), await v.fetch_order(order["id"], BTC)

    order, opened, canceled, after, fetched = run(fake, body)
    assert order["clientOrderId"] == "sofia-limit-1"
    assert (order["status"], order["price"], order["amount"]) == ("open", 59000, 0.01)
    assert [o["clientOrderId"] for o in fake.orders_with_client_id("sofia-limit-1")] == ["sofia-limit-1"]
    assert [(o["id"], o["clientOrderId"]) for o in opened] == [(order["id"], "sofia-limit-1")]
    assert canceled["status"] == "canceled" and canceled["clientOrderId"] == "sofia-limit-1"
    assert after == [] and fetched["status"] == "canceled"


def test_post_only_goes_as_limit_maker_and_is_refused_when_it_would_take(fake):
    async def body(v):
        await v.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "po-rest", "postOnly": True})
        await v.create_order(BTC, "limit", "buy", 0.01, 60001, {"clientOrderId": "po-take", "postOnly": True})

    with pytest.raises(base.InvalidOrder, match="immediately match"):
        run(fake, body)
    assert fake.orders_with_client_id("po-rest")[0]["type"] == "LIMIT_MAKER"
    assert fake.orders_with_client_id("po-take") == []


def test_market_order_fills_and_its_trades_are_drained_once(fake):
    async def body(v):
        order = await v.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "sofia-mkt-1"})
        trades = await v.fetch_my_trades(BTC)
        await v.poll_trades([BTC])
        first = v.drain_trades()
        await v.poll_trades()
        again = v.drain_trades()
        resting = await v.create_order(BTC, "limit", "sell", 0.02, 61000, {"clientOrderId": "sofia-rest-1"})
        fake.fill_resting("sofia-rest-1", "0.005")
        await v.poll_trades()
        return order, trades, first, again, resting, v.drain_trades()

    order, trades, first, again, resting, maker = run(fake, body)
    assert order["status"] == "closed" and order["filled"] == 0.01 and order["clientOrderId"] == "sofia-mkt-1"
    assert [(t["order"], t["side"], t["amount"], t["price"]) for t in trades] == [(order["id"], "buy", 0.01, 60001)]
    assert [t["id"] for t in first] == [t["id"] for t in trades] and again == []
    assert [(t["order"], t["side"], t["amount"], t["takerOrMaker"]) for t in maker] == [
        (resting["id"], "sell", 0.005, "maker")]


def test_trades_of_other_clients_are_not_drained(fake):
    run(fake, lambda v: v.create_order(BTC, "market", "sell", 0.01, None, {"clientOrderId": "someone-else"}))

    async def body(v):
        await v.create_order(BTC, "market", "buy", 0.01)
        await v.poll_trades()
        return v.drain_trades()

    assert len(run(fake, body)) == 1 and len(fake.trades) == 2


def test_lost_response_is_found_by_client_order_id_not_sent_again(fake):
    fake.drop_next("/api/v3/order", after_processing=True)
    order = run(fake, lambda v: v.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "sofia-drop-1"}))
    assert order["clientOrderId"] == "sofia-drop-1" and order["status"] == "open"
    assert len(fake.orders_with_client_id("sofia-drop-1")) == 1 and fake.orders_created == 1
    assert fake.count("POST", "/api/v3/order") == 1 and fake.count("GET", "/api/v3/order") == 1
    assert order["id"] == str(fake.orders_with_client_id("sofia-drop-1")[0]["orderId"])


@pytest.mark.parametrize("fault", ["drop_before", "rate_limited", "internal_error"])
def test_request_that_never_arrived_is_sent_again_with_the_same_id(fake, fault):
    if fault == "drop_before":
        fake.drop_next("/api/v3/order", after_processing=False)
    elif fault == "rate_limited":
        fake.fail_next("/api/v3/order", status=429, code=-1003, msg="Too many requests.")
    else:  # binance: 5xx means the execution status is unknown
        fake.fail_next("/api/v3/order", status=503, code=-1001)
    order = run(fake, lambda v: v.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "sofia-again-1"}))
    assert order["clientOrderId"] == "sofia-again-1" and order["status"] == "closed"
    assert fake.count("POST", "/api/v3/order") == 2 and fake.orders_created == 1


def test_gives_up_with_a_network_error_after_the_retries(fake):
    fake.drop_next("/api/v3/order", after_processing=False, times=10)
    with pytest.raises(base.NetworkError, match="sofia-never-1"):
        run(fake, lambda v: v.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "sofia-never-1"}), retries=2)
    assert fake.count("POST", "/api/v3/order") == 3 and fake.count("GET", "/api/v3/order") == 2
    assert fake.orders_created == 0


@pytest.mark.parametrize("amount, price, error, message", [
    (0.00005, 59000, base.InvalidOrder, "NOTIONAL"),         # 2.95 USDT < minNotional 5
    (9001, 59000, base.InvalidOrder, "LOT_SIZE"),            # above maxQty
    (5, 59000, base.InsufficientFunds, "insufficient balance"),
])
def test_rejected_orders_are_mapped_and_never_retried(fake, amount, price, error, message):
    with pytest.raises(error, match=message):
        run(fake, lambda v: v.create_order(BTC, "limit", "buy", amount, price))
    assert fake.count("POST", "/api/v3/order") == 1 and fake.count("GET", "/api/v3/order") == 0
    assert fake.orders_created == 0


def test_duplicate_client_order_id_of_an_open_order_is_refused(fake):
    async def body(v):
        await v.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "sofia-dup-1"})
        await v.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "sofia-dup-1"})

    with pytest.raises(base.InvalidOrder, match="Duplicate"):
        run(fake, body)
    assert fake.count("POST", "/api/v3/order") == 2 and len(fake.orders_with_client_id("sofia-dup-1")) == 1


def test_find_order_and_missing_orders(fake):
    async def body(v):
        await v.create_order(BTC, "limit", "sell", 0.01, 61000, {"clientOrderId": "sofia-find-1"})
        found, missing = await v.find_order("sofia-find-1", BTC), await v.find_order("sofia-nope", BTC)
        try:
            await v.cancel_order("999999", BTC)
        except base.OrderNotFound:
            return found, missing, "not found"

    found, missing, cancel = run(fake, body)
    assert found["clientOrderId"] == "sofia-find-1" and found["side"] == "sell" and missing is None
    assert cancel == "not found"


def test_keys_never_appear_in_repr_errors_logs_or_results(fake, caplog):
    caplog.set_level(logging.DEBUG, logger="sofia_runtime.exchange.live")
    fake.drop_next("/api/v3/order", after_processing=False)

    async def body(v):
        assert KEY not in repr(v) and SECRET not in repr(v) and KEY not in str(v)
        order = await v.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "sofia-keys-1"})
        return [order, await v.fetch_balance(), await v.fetch_open_orders(BTC)]

    results = run(fake, body)
    with pytest.raises(AuthenticationError) as err:
        run(fake, lambda v: v.fetch_balance(), secret="bad-secret-but-long")
    assert "X-MBX-APIKEY" in caplog.text  # ccxt logged the request headers ...
    texts = [str(results), repr(results), caplog.text, str(err.value), repr(err.value)]
    assert not any(secret in t for t in texts for secret in (KEY, SECRET, "bad-secret-but-long"))  # ... scrubbed


def test_requests_are_paced_by_the_rate_limiter(fake):
    async def body(v):
        assert v._ex.enableRateLimit
        await v.fetch_balance()  # loads markets first: exchangeInfo weighs 4, account 4
        t = time.monotonic()
        await v.fetch_balance()
        return time.monotonic() - t

    assert run(fake, body, rate_limit_ms=25) >= 0.09  # waited for the 4 x 25 ms of the previous call


# --- market data over the websocket stream ---------------------------------------------------------------------------

def test_best_bid_and_ask_stream_over_the_websocket_and_follow_the_book(fake):
    async def body(v):
        assert v.stream_method() == "watch_bids_asks"
        first = await v.watch_best(BTC)
        fake.set_top("BTCUSDT", "61000.00", "61000.50")
        for _ in range(50):  # the next pushes carry the moved book
            moved = await v.watch_best(BTC)
            if moved["bid"] == 61000.0:
                break
        return first, moved, await v.watch_best("ETH/USDT")

    first, moved, eth = run(fake, body)
    assert (first["bid"], first["ask"], first["bid_size"], first["ask_size"]) == (60000.0, 60001.0, 2.0, 2.0)
    assert (moved["bid"], moved["ask"]) == (61000.0, 61000.5)
    assert (eth["symbol"], eth["bid"], eth["ask"]) == ("ETH/USDT", 3000.0, 3000.5)
    assert sorted(fake.stream_subscriptions) == ["btcusdt@bookTicker", "ethusdt@bookTicker"]
    assert fake.count("GET", "/api/v3/depth") == 0  # nothing polled
    assert fake.count("GET", "/api/v3/exchangeInfo") == 1  # the stream reuses the REST side's markets


class _Engine:
    """What live_events reads and writes on the engine."""

    def __init__(self):
        self.stopping, self.venue_error, self.market_data, self.errors = asyncio.Event(), None, None, []

    def _error(self, kind, message):
        self.errors.append((kind, message))


def _follow(fake, market_data, script, seconds=60.0, **kw):  # seconds: a hang catcher
    """Run live_events for BTC and ETH; script(n, engine) is called at each event. Returns (engine, [(mode, symbol,
    bid)] per event)."""
    async def body(v):
        engine, seen = _Engine(), []
        await v.fetch_balance()
        t = time.monotonic()
        async for _, book in live_events(v, [BTC, "ETH/USDT"], Books(), engine, market_data, **kw):
            seen.append((engine.market_data, book.symbol, book.bid))
            if script(len(seen), engine) or time.monotonic() - t > seconds:
                break
        return engine, seen
    return run(fake, body)


def test_live_market_data_streams_and_reconnects_after_the_venue_drops_the_connection(fake):
    def script(n, engine):
        if n == 20:
            fake.drop_streams()
        return n >= 60

    engine, seen = _follow(fake, "auto", script)
    assert len(seen) == 60 and {mode for mode, _, _ in seen} == {"websocket"}
    assert {symbol for _, symbol, _ in seen} == {BTC, "ETH/USDT"}  # one symbol never starves the other
    # ccxt gives each subscription its own connection (binance allows 50 per client): two, then two again
    assert fake.stream_connections == 4 and fake.count("GET", "/api/v3/depth") == 0
    assert [kind for kind, _ in engine.errors] == ["market_data"]
    assert "Connection closed" in engine.errors[0][1] and engine.venue_error is None


def test_live_market_data_polls_while_the_stream_is_refused_and_returns_to_it(fake):
    fake.stream_refused = True
    polled_at = []

    def script(n, engine):
        if engine.market_data == "polling" and not polled_at:
            polled_at.append(n)
            fake.stream_refused = False  # the stream comes back; auto tries it again after stream_retry_s
        return engine.market_data == "websocket" and n > 10

    engine, seen = _follow(fake, "auto", script, stream_retry_s=0.5)
    modes = [mode for mode, _, _ in seen]
    assert modes[0] == "polling" and modes[-1] == "websocket"
    assert fake.count("GET", "/api/v3/depth") >= 2 and fake.stream_connections == 2
    assert engine.errors and all(kind == "market_data" and "503" in msg for kind, msg in engine.errors)
    assert engine.venue_error is None  # polling kept the books fresh: the venue counts as reachable


def test_websocket_only_market_data_reports_the_venue_unreachable_instead_of_polling(fake):
    fake.stream_refused = True

    async def body(v):
        engine = _Engine()
        events = live_events(v, [BTC], Books(), engine, "websocket", stream_retry_s=0.2)
        pending = asyncio.ensure_future(anext(events))
        for _ in range(6000):  # the refusal reaches the engine after the first attempt; 60 s catches a hang
            if engine.venue_error:
                break
            await asyncio.sleep(0.01)
        assert not pending.done() and engine.venue_error.startswith("websocket stream: ")
        fake.stream_refused = False
        await asyncio.wait_for(pending, 60)
        await events.aclose()
        return engine

    engine = run(fake, body)
    assert engine.venue_error is None and fake.count("GET", "/api/v3/depth") == 0


def test_polling_market_data_never_opens_the_stream(fake):
    engine, seen = _follow(fake, "polling", lambda n, e: n >= 4)
    assert [mode for mode, _, _ in seen] == ["polling"] * 4 and fake.stream_connections == 0
    assert fake.count("GET", "/api/v3/depth") == 4


def test_venues_without_websocket_support_in_ccxt_are_polled():
    assert stream_method_for("binance") == "watch_bids_asks"
    assert stream_method_for("bitstamp") == "watch_order_book"  # no best-bid-ask stream: the order book's top
    assert stream_method_for("btcturk") is None  # REST only in ccxt
    # REST moved to a local server without a websocket url: never stream the real venue's books next to it
    assert LiveVenue("binance", KEY, SECRET, base_url="http://127.0.0.1:9").stream_method() is None
    assert LiveVenue("binance", KEY, SECRET, base_url="http://127.0.0.1:9",
                     ws_url="ws://127.0.0.1:9").stream_method() == "watch_bids_asks"


def test_live_preconditions_name_every_missing_condition():
    assert live_preconditions("paper", False, {}, "binance") == [
        "--mode is paper, not live",
        "allow_live is false in the configuration",
        "SOFIA_BINANCE_API_KEY is not set",
        "SOFIA_BINANCE_SECRET is not set",
    ]
    env = {"SOFIA_BINANCE_API_KEY": KEY, "SOFIA_BINANCE_SECRET": SECRET}
    assert live_preconditions("live", False, {"SOFIA_BINANCE_API_KEY": KEY}, "binance") == [
        "allow_live is false in the configuration", "SOFIA_BINANCE_SECRET is not set"]
    assert live_preconditions("live", True, env, "binance") == []
    assert keys_from_env("binance", env) == (KEY, SECRET)
    with pytest.raises(ValueError, match="SOFIA_BINANCE_SECRET") as err:
        keys_from_env("binance", {"SOFIA_BINANCE_API_KEY": KEY})
    assert KEY not in str(err.value)


def test_fake_binance_runs_as_its_own_process():
    script = Path(__file__).with_name("fake_binance.py")
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--key", KEY, "--secret", SECRET],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split()[-1]
        fake = SimpleNamespace(base_url=url)
        assert run(fake, lambda v: v.fetch_balance())["ETH"]["free"] == 10
    finally:
        proc.terminate()
        proc.wait(5)


def test_importing_the_adapter_does_not_import_ccxt():
    code = "import sys, sofia_runtime.exchange.live; print('ccxt' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
