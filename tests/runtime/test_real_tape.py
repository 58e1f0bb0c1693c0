"""The paper runtime on a real exchange tape: Binance spot BTC/USDT best bid/ask and trades (NautilusTrader's test
data, read in place) converted to the snapshot's books and trades, published with the hand-made snapshot's other
tables, and replayed by `sofia-runtime run` as a process: sparse real quotes, real trades, orders sent, fills from
the tape, and a journal whose chain verifies."""

from __future__ import annotations

from datetime import timezone
from decimal import Decimal

import polars as pl
import pytest

from runtime_support import PERP, SPOT, RuntimeData, publish, snapshot_tables
from sofia_runtime.journal import journal_files, verify
from sofia_runtime.marketdata import BOOK, TRADE, ReplayFeed
from sofia_runtime.schemas import RAW_TABLES
from sofia_runtime.snapshot import load_current

pytestmark = pytest.mark.slow


def binance_tape(holdout) -> tuple[pl.DataFrame, pl.DataFrame]:
    """raw.books and raw.trades from the Parquet files as NautilusTrader wrote them: `timestamp` (exchange time,
    UTC), best bid/ask with sizes; trades with `buyer_maker` as the strings "True"/"False" (a buyer-maker trade
    is a taker sell)."""
    folder = holdout / "nautilus"
    quotes = pl.read_parquet(folder / "binance__btcusdt-quotes.parquet")
    trades = pl.read_parquet(folder / "binance__btcusdt-trades.parquet")
    books = quotes.select(venue=pl.lit("binance"), symbol=pl.col("symbol"), market=pl.lit("spot"),
                          ts=pl.col("timestamp").dt.replace_time_zone(None), bid="bid", ask="ask",
                          bid_size="bid_size", ask_size="ask_size")
    ticks = trades.select(venue=pl.lit("binance"), symbol=pl.lit("BTC/USDT"), market=pl.lit("spot"),
                          ts=pl.col("timestamp").dt.replace_time_zone(None), trade_id=pl.col("trade_id").cast(pl.Utf8),
                          side=pl.when(pl.col("buyer_maker") == "True").then(pl.lit("sell")).otherwise(pl.lit("buy")),
                          price="price", amount="quantity")
    return (RAW_TABLES["books"].conform(books, "nautilus binance__btcusdt-quotes.parquet"),
            RAW_TABLES["trades"].conform(ticks, "nautilus binance__btcusdt-trades.parquet"))


@pytest.fixture
def real_tape(runtime_data: RuntimeData, holdout) -> tuple[RuntimeData, pl.DataFrame, pl.DataFrame]:
    books, trades = binance_tape(holdout)
    tables = {**snapshot_tables(), "replay_books": books, "replay_trades": trades}
    publish(runtime_data.dir, tables)
    return runtime_data, books, trades


def test_the_replay_feed_carries_every_real_event_in_time_order(real_tape):
    runtime_data, books, trades = real_tape
    snapshot = load_current(runtime_data.dir / "serving")
    feed = ReplayFeed(snapshot.scan("replay_books"), snapshot.scan("replay_trades"), keep={("binance", SPOT)},
                      funding=snapshot.scan("replay_funding"))
    assert (books.height, trades.height) == (451, 2001)
    assert len(feed) == books.height + trades.height
    assert (feed.ts[1:] >= feed.ts[:-1]).all()
    assert feed.start_ms == _ms(min(books["ts"].min(), trades["ts"].min()))
    assert feed.end_ms == _ms(max(books["ts"].max(), trades["ts"].max()))
    kinds = feed.kinds.tolist()
    assert kinds.count(BOOK) == 451 and kinds.count(TRADE) == 2001
    sides = {feed.trade(i).side for i in range(len(feed.trade_ts))}
    assert sides == {"buy", "sell"}


def _run(runtime_data: RuntimeData, runtime_id: str, *args: str) -> list[dict]:
    proc = runtime_data.cli("run", *args, "--venue", "binance", "--speed", "0", "--port", "0", "--runtime-id",
                            runtime_id, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = runtime_data.records(runtime_id)
    assert verify(journal_files(runtime_data.dir / "audit" / runtime_id)) is None
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    return records


def _ms(ts) -> int:
    return int(ts.replace(tzinfo=timezone.utc).timestamp() * 1000)


def test_the_router_trades_a_real_tape_at_its_real_prices(real_tape):
    runtime_data, books, trades = real_tape
    records = _run(runtime_data, "tape-router", "--strategy", "router", "--order", "buy 0.3 BTC/USDT")
    orders = [r["payload"] for r in records if r["kind"] == "order"]
    fills = [r["payload"] for r in records if r["kind"] == "fill"]
    assert len(orders) >= 2 and {(o["venue"], o["symbol"]) for o in orders} == {("binance", SPOT)}
    # children are rounded down to the amount step: what is left (0.00001 BTC, 0.39 USD) is below the venue's
    # minimum notional and is not sent
    assert Decimal("0.3") - sum(Decimal(f["amount"]) for f in fills) == Decimal("0.00001")
    assert not [r for r in records if r["kind"] == "order_rejected"]
    quotes = books.with_columns(ms=pl.col("ts").dt.epoch("ms"))
    for f in fills:  # a market buy pays at least the real best ask in force when it reached the venue
        ask = quotes.filter(pl.col("ms") <= int(f["market_ts"]))["ask"][-1]
        assert ask <= float(f["price"]) <= ask * 1.001, (f, ask)
    assert records[-1]["payload"]["reason"] == "strategy done"


def test_mm_lite_quotes_a_real_tape_and_the_gate_says_why_it_does_not_pay(real_tape):
    runtime_data, books, trades = real_tape
    records = _run(runtime_data, "tape-mm", "--strategy", "mm_lite")
    # the perp has no tape here: refused, and said so; the spot is traded
    [refused] = [r["payload"] for r in records if r["kind"] == "instrument_refused"]
    assert refused["not_tradable"] == {f"binance {PERP}": f"no books for binance {PERP} in the snapshot's replay_books"}
    assert refused["trading"] == [f"binance {SPOT}"]
    decisions = [r["payload"] for r in records if r["kind"] == "decision"]
    assert decisions
    first, last = _ms(books["ts"].min()), _ms(max(books["ts"].max(), trades["ts"].max()))
    for d in decisions:  # on the real quotes: their time and mid
        assert first <= int(d["market_ts"]) <= last
        leg = d["legs"][0]
        assert books["bid"].min() <= float(leg["mid"]) <= books["ask"].max()
        # BTC/USDT trades at a one-tick spread: a resting quote does not cover its fee and adverse selection
        assert d["passed"] is False and d["gate_reason"].startswith("EV ")
    stop = records[-1]["payload"]
    assert stop["reason"] == "replay finished" and int(stop["market_ts"]) == last
