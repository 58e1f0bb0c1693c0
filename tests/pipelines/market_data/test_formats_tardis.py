"""Tardis.dev CSVs read by the files source's formats: the real files NautilusTrader keeps, read in place,
and small hand-made files for each error."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sofia_pipelines.defs.market_data.formats import FileHints, format_of
from sofia_pipelines.defs.market_data.formats.symbols import instrument
from sofia_pipelines.defs.market_data.formats.tardis import TardisIncrementalBook
from sofia_runtime.schemas import SchemaError

from formats_support import read, write

HEAD = "exchange,symbol,timestamp,local_timestamp"


def test_book_snapshot_5_is_the_top_of_book(holdout):
    path = holdout / "nautilus" / "tardis__binance-futures_book_snapshot_5_BTCUSDT.csv"
    assert format_of(path).name == "tardis_book_snapshot"
    books = read(path)["books"]
    assert books.height == 10
    assert books["venue"].unique().to_list() == ["binance"]
    assert books["symbol"].unique().to_list() == ["BTC/USDT:USDT"]
    assert books["market"].unique().to_list() == ["perp"]
    first, last = books.row(0, named=True), books.row(-1, named=True)
    assert first["ts"] == datetime(2020, 9, 1, 0, 0, 3, 696000)
    assert first["local_ts"] == datetime(2020, 9, 1, 0, 0, 3, 810000)  # 1598918403810979 µs, to the ms
    assert (first["bid"], first["bid_size"], first["ask"], first["ask_size"]) == (11657.07, 10.896, 11657.08, 1.714)
    assert last["ts"] == datetime(2020, 9, 1, 0, 0, 4, 284000)
    assert (last["bid"], last["bid_size"], last["ask"], last["ask_size"]) == (11657.07, 10.881, 11657.08, 1.393)


def test_book_snapshot_25_agrees_with_snapshot_5_where_both_have_a_time(holdout):
    five = read(holdout / "nautilus" / "tardis__binance-futures_book_snapshot_5_BTCUSDT.csv")["books"]
    deep = read(holdout / "nautilus" / "tardis__binance-futures_book_snapshot_25_BTCUSDT.csv")["books"]
    assert deep.height == 10
    assert deep["ts"].max() == datetime(2020, 9, 1, 0, 0, 4, 5000)
    both = five.join(deep, on="ts", suffix="_25")
    assert both.height == 4  # 03.696, 03.888, 03.930, 03.965
    for c in ("bid", "ask", "bid_size", "ask_size"):
        assert both[c].to_list() == both[f"{c}_25"].to_list()


def test_trades_keep_the_taker_side_and_ids(holdout):
    trades = read(holdout / "nautilus" / "tardis__bitmex_trades_XBTUSD.csv")["trades"]
    assert trades.height == 10
    assert set(trades["venue"]) == {"bitmex"} and set(trades["symbol"]) == {"BTC/USD:BTC"}
    assert set(trades["side"]) == {"sell"}
    assert trades["trade_id"].n_unique() == 10
    assert trades.row(0, named=True)["trade_id"] == "ccc3c1fa-212c-e8b0-1706-9b9c4f3d5ecf"
    assert trades["amount"].to_list()[:2] == [2152.0, 1.0]
    assert trades["ts"].min() == datetime(2020, 3, 1, 0, 0, 3, 145000)
    assert trades["ts"].max() == datetime(2020, 3, 1, 0, 0, 3, 276000)
    assert trades["local_ts"].max() == datetime(2020, 3, 1, 0, 0, 3, 336000)


def test_incremental_book_with_asks_only_is_refused_not_read_as_nothing(holdout):
    path = holdout / "nautilus" / "tardis__deribit_incremental_book_L2_BTC-PERPETUAL.csv"
    assert format_of(path).name == "tardis_incremental_book_L2"
    with pytest.raises(SchemaError, match=r"deribit BTC/USD:BTC never had both a bid and an ask .*asks: 15"):
        read(path)


def test_incremental_book_is_sampled_at_the_cadence_and_reset_by_a_snapshot(tmp_path):
    path = write(tmp_path, "deribit_l2.csv", f"""
        {HEAD},is_snapshot,side,price,amount
        deribit,BTC-PERPETUAL,1585699200245000,1585699200355684,true,ask,6421.5,18640
        deribit,BTC-PERPETUAL,1585699200245000,1585699200355684,true,ask,6422,1190
        deribit,BTC-PERPETUAL,1585699200245000,1585699200355684,true,bid,6421,500
        deribit,BTC-PERPETUAL,1585699200800000,1585699200900000,false,bid,6421,700
        deribit,BTC-PERPETUAL,1585699201500000,1585699201600000,false,ask,6421.5,0
        deribit,BTC-PERPETUAL,1585699203200000,1585699203300000,true,ask,6430,10
        deribit,BTC-PERPETUAL,1585699203200000,1585699203300000,true,bid,6429,20
        deribit,BTC-PERPETUAL,1585699203700000,1585699203800000,false,bid,6429.5,5
    """)
    books = read(path)["books"]
    t0 = datetime(2020, 4, 1)
    assert books["ts"].to_list() == [t0.replace(second=s) for s in (1, 2, 3, 4)]
    assert books.select("bid", "bid_size", "ask", "ask_size").rows() == [
        (6421.0, 700.0, 6421.5, 18640.0),  # after the update at .800
        (6421.0, 700.0, 6422.0, 1190.0),  # 6421.5 removed at 01.500
        (6421.0, 700.0, 6422.0, 1190.0),  # nothing new by 00:00:03
        (6429.5, 5.0, 6430.0, 10.0),  # the snapshot at 03.200 cleared the old book
    ]
    assert books["local_ts"].to_list()[0] == datetime(2020, 4, 1, 0, 0, 0, 900000)
    every_5s = read(path, fmt=TardisIncrementalBook(cadence_ms=5_000))["books"]
    assert every_5s["ts"].to_list() == [t0.replace(second=5)] and every_5s["bid"].to_list() == [6429.5]


def test_a_snapshot_spanning_messages_is_one_book(tmp_path):
    path = write(tmp_path, "l2.csv", f"""
        {HEAD},is_snapshot,side,price,amount
        bybit,BTCUSD,1585699200100000,1585699200150000,true,ask,6422,1
        bybit,BTCUSD,1585699200100000,1585699200160000,true,bid,6421,2
        bybit,BTCUSD,1585699200500000,1585699200550000,false,bid,6421,3
    """)
    books = read(path)["books"]
    assert books.select("symbol", "bid", "bid_size", "ask").rows() == [("BTC/USD:BTC", 6421.0, 3.0, 6422.0)]


def test_a_feed_gap_is_not_filled_with_a_stale_book(tmp_path):
    path = write(tmp_path, "gap.csv", f"""
        {HEAD},is_snapshot,side,price,amount
        deribit,BTC-PERPETUAL,1585699200000000,1585699200000000,true,ask,6422,1
        deribit,BTC-PERPETUAL,1585699200000000,1585699200000000,true,bid,6421,1
        deribit,BTC-PERPETUAL,1585699500500000,1585699500500000,false,bid,6421.5,1
    """)
    books = read(path)["books"]
    # at 00:00:00 and every second up to the 60 s staleness limit, then nothing until the next update
    assert books.height == 61 + 1
    assert books["ts"][60] == datetime(2020, 4, 1, 0, 1, 0) and books["ts"][61] == datetime(2020, 4, 1, 0, 5, 1)
    assert books["bid"][61] == 6421.5


def test_quotes_and_gzip(tmp_path):
    text = f"""{HEAD},ask_amount,ask_price,bid_price,bid_amount
binance,BTCUSDT,1598918403696000,1598918403810979,1.5,11657.08,11657.07,2.5
binance,BTCUSDT,1598918403696500,1598918403811979,1.25,11657.09,11657.07,2.5
binance,BTCUSDT,1598918404000000,1598918404100000,1.0,11657.10,11657.00,3.0
"""
    path = tmp_path / "binance_quotes_BTCUSDT.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    assert format_of(path).name == "tardis_quotes"
    books = read(path)["books"]
    assert set(books["symbol"]) == {"BTC/USDT"} and set(books["market"]) == {"spot"}
    # two quotes within one millisecond: raw.books is keyed by ms, the later one stands
    assert books.select("ts", "ask", "ask_size").rows() == [
        (datetime(2020, 9, 1, 0, 0, 3, 696000), 11657.09, 1.25), (datetime(2020, 9, 1, 0, 0, 4), 11657.10, 1.0)]


def test_derivative_ticker_gives_the_rate_in_force_at_each_funding_time(tmp_path):
    path = write(tmp_path, "ticker.csv", f"""
        {HEAD},funding_timestamp,funding_rate,predicted_funding_rate,open_interest,last_price,index_price,mark_price
        binance-futures,BTCUSDT,1598918399000000,1598918399100000,1598918400000000,0.0001,,100,11600,11601,11602
        binance-futures,BTCUSDT,1598918399900000,1598918399950000,1598918400000000,0.00012,,100,11600,11603,11604
        binance-futures,BTCUSDT,1598918400100000,1598918400200000,1598947200000000,0.0002,,100,11600,11605,11606
        binance-futures,BTCUSDT,1598947100000000,1598947100100000,1598947200000000,0.00025,,100,11600,11700,11701
        binance-futures,BTCUSDT,1598947300000000,1598947300100000,1598976000000000,0.0003,,100,11600,11800,11801
        binance-futures,ETHUSDT,1598918399900000,1598918399950000,,,,100,400,401,402
    """)
    funding = read(path)["funding"].sort("ts")
    assert funding.rows() == [
        ("binance", "BTC/USDT:USDT", datetime(2020, 9, 1, 0), 0.00012, 11604.0, 11603.0),
        ("binance", "BTC/USDT:USDT", datetime(2020, 9, 1, 8), 0.00025, 11701.0, 11700.0),
    ]  # 16:00's rate was still a forecast when the file ends


def test_derivative_ticker_without_any_funding_time_is_reported(tmp_path):
    path = write(tmp_path, "deribit_ticker.csv", f"""
        {HEAD},funding_timestamp,funding_rate,predicted_funding_rate,open_interest,last_price,index_price,mark_price
        deribit,BTC-PERPETUAL,1598918399000000,1598918399100000,,,,100,11600,11601,11602
    """)
    with pytest.raises(SchemaError, match="no row names a funding_timestamp"):
        read(path)


@pytest.mark.parametrize("line, row, field, message", [
    ("bitmex,XBTUSD,1583020803145000,1583020803307160,x1,sell,8531.5,1\n"
     "bitmex,XBTUSD,1583020803276000,1583020803336743,x2,sell,abc,1", 2, "price", "'abc' is not a number"),
    ("bitmex,XBTUSD,1583020803145000,1583020803307160,x1,unknown,8531.5,1", 1, "side", "not one of"),
    ("bitmex,XBTUSD,158302080314500x,1583020803307160,x1,buy,8531.5,1", 1, "timestamp", "not a number"),
    ("mtgox,XBTUSD,1583020803145000,1583020803307160,x1,buy,8531.5,1", 1, "exchange", "no known ccxt id"),
    ("bitmex,XBTZ20,1583020803145000,1583020803307160,x1,buy,8531.5,1", 1, "symbol", "quote currency"),
    ("bitmex,XBTUSD,1583020803145000,1583020803307160,x1,buy,8531.5,1\n"
     "bitmex,XBTUSD,1583020803145000,1583020803307160,x2,buy", 2, None, "not a CSV row of 8 fields"),
    ("bitmex,XBTUSD,1583020813145000,1583020813307160,x1,buy,8531.5,1\n"
     + "\n".join(f"bitmex,XBTUSD,{1583020813145000 + i * 1000},1583020813307160,y{i},buy,1,1" for i in range(3))
     + "\nbitmex,XBTUSD,1583020803145000,1583020803307160,x2,buy,8531.5,1", None, "ts", None),
])
def test_bad_trade_rows_name_file_row_and_field(tmp_path, line, row, field, message):
    path = write(tmp_path, "trades.csv", f"{HEAD},id,side,price,amount\n{line}\n")
    with pytest.raises(SchemaError) as err:
        read(path)
    assert err.value.origin == str(path) and err.value.field == field
    if row is not None:
        assert err.value.row == row
    if message:
        assert message in str(err.value)


def test_trades_without_a_venue_id_get_one_derived_from_their_time(tmp_path):
    path = write(tmp_path, "trades.csv", f"""
        {HEAD},id,side,price,amount
        bitmex,XBTUSD,1583020803145000,1583020803307160,,buy,8531.5,1
        bitmex,XBTUSD,1583020803145000,1583020803307160,,sell,8531.5,2
        bitmex,XBTUSD,1583020803145000,1583020803307160,abc,sell,8531.5,3
        bitmex,XBTUSD,1583020803146000,1583020803307160,,sell,8531.5,4
    """)
    trades = read(path)["trades"]
    assert trades["trade_id"].to_list() == ["t1583020803145000-0", "t1583020803145000-1", "abc",
                                            "t1583020803146000-0"]
    assert read(path)["trades"].equals(trades)  # the same keys every time the file is read


def test_trades_out_of_order_beyond_the_window_name_the_row(tmp_path):
    rows = [f"bitmex,XBTUSD,{1583020800000000 + i * 1_000_000},1,t{i},buy,1,1" for i in range(20)]
    rows.append("bitmex,XBTUSD,1583020801000000,1,late,buy,1,1")  # 18 s before the row above it
    path = write(tmp_path, "trades.csv", "\n".join([f"{HEAD},id,side,price,amount", *rows]) + "\n")
    with pytest.raises(SchemaError, match="out of order") as err:
        read(path)
    assert (err.value.row, err.value.field) == (21, "ts")


def test_updates_before_the_first_snapshot_are_passed_over(tmp_path):
    path = write(tmp_path, "l2.csv", f"""
        {HEAD},is_snapshot,side,price,amount
        deribit,BTC-PERPETUAL,1585699199900000,1585699199950000,false,bid,7000,5
        deribit,BTC-PERPETUAL,1585699200245000,1585699200355684,true,ask,6421.5,18640
        deribit,BTC-PERPETUAL,1585699200245000,1585699200355684,true,bid,6421,500
    """)
    books = read(path)["books"]  # Tardis: updates buffered before the venue's snapshot after a reconnect
    assert books.select("ts", "bid", "ask").rows() == [(datetime(2020, 4, 1, 0, 0, 1), 6421.0, 6421.5)]


def test_one_sided_quotes_have_no_top_of_book(tmp_path):
    path = write(tmp_path, "quotes.csv", f"""
        {HEAD},ask_amount,ask_price,bid_price,bid_amount
        binance,BTCUSDT,1598918403696000,1598918403810979,,,11657.07,2.5
        binance,BTCUSDT,1598918403697000,1598918403811979,1.25,11657.09,11657.07,2.5
    """)
    assert read(path)["books"].select("ask", "bid").rows() == [(11657.09, 11657.07)]
    one_sided = write(tmp_path, "one_sided.csv", f"""
        {HEAD},ask_amount,ask_price,bid_price,bid_amount
        binance,BTCUSDT,1598918403696000,1598918403810979,,,11657.07,2.5
    """)
    with pytest.raises(SchemaError, match="all 1 rows have an empty side"):
        read(one_sided)
    half_empty = write(tmp_path, "half.csv", f"""
        {HEAD},ask_amount,ask_price,bid_price,bid_amount
        binance,BTCUSDT,1598918403696000,1598918403810979,1.5,,11657.07,2.5
    """)
    with pytest.raises(SchemaError) as err:
        read(half_empty)
    assert (err.value.row, err.value.field) == (1, "ask_price")


def test_book_update_before_any_snapshot_is_refused(tmp_path):
    path = write(tmp_path, "l2.csv", f"""
        {HEAD},is_snapshot,side,price,amount
        deribit,BTC-PERPETUAL,1585699200245000,1585699200355684,false,ask,6421.5,18640
    """)
    with pytest.raises(SchemaError, match="and no snapshot") as err:
        read(path)
    assert (err.value.row, err.value.field) == (1, "is_snapshot")


def test_bad_is_snapshot_and_side(tmp_path):
    for cells, field in (("maybe,ask", "is_snapshot"), ("true,buy", "side")):
        path = write(tmp_path, "l2.csv", f"{HEAD},is_snapshot,side,price,amount\n"
                                         f"deribit,BTC-PERPETUAL,1585699200245000,1585699200355684,{cells},1,1\n")
        with pytest.raises(SchemaError) as err:
            read(path)
        assert (err.value.row, err.value.field) == (1, field)


def test_tardis_exchanges_that_list_spot_and_perps_together(tmp_path):
    path = write(tmp_path, "ftx_trades.csv", f"""
        {HEAD},id,side,price,amount
        ftx,BTC-PERP,1583020803145000,1583020803307160,1,buy,8531.5,1
        ftx,BTC/USD,1583020803145000,1583020803307160,2,buy,8531.0,1
        deribit,BTC-PERPETUAL,1583020803145000,1583020803307160,3,sell,8532.0,10
    """)
    trades = read(path)["trades"].sort("trade_id")
    assert trades.select("venue", "symbol", "market").rows() == [
        ("ftx", "BTC/USD:USD", "perp"), ("ftx", "BTC/USD", "spot"), ("deribit", "BTC/USD:BTC", "perp")]


def test_symbols_map_to_ccxt_with_or_without_a_markets_dump():
    assert instrument("binance", "BTCUSDT", "perp", "x").symbol == "BTC/USDT:USDT"
    assert instrument("binance", "BTCUSDT", "spot", "x").symbol == "BTC/USDT"
    assert instrument("bitmex", "XBTUSD", "perp", "x").symbol == "BTC/USD:BTC"
    assert instrument("deribit", "BTC-PERPETUAL", "perp", "x").symbol == "BTC/USD:BTC"
    assert instrument("okx", "BTC-USDT-SWAP", "perp", "x").symbol == "BTC/USDT:USDT"
    assert instrument("binance", "DOTUSD", "spot", "x").symbol == "DOT/USD"
    assert instrument("ftx", "BTC-PERP", None, "x").symbol == "BTC/USD:USD"
    assert instrument("hyperliquid", "ETH", "perp", "x").symbol == "ETH/USDC:USDC"
    assert instrument("deribit", "ETH_USDC-PERPETUAL", "perp", "x").symbol == "ETH/USDC:USDC"
    assert instrument("binance", "BTCUSD_PERP", "perp", "x").symbol == "BTC/USD:BTC"
    dump = {"BTC/USDT": {"id": "BTCUSDT", "symbol": "BTC/USDT", "spot": True, "swap": False},
            "BTC/USDT:USDT": {"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "spot": False, "swap": True}}
    found = instrument("binance", "BTCUSDT", "perp", "x", markets=dump)
    assert (found.symbol, found.inferred) == ("BTC/USDT:USDT", False)
    with pytest.raises(SchemaError, match="2 markets"):
        instrument("binance", "BTCUSDT", None, "x", markets=dump)
    with pytest.raises(SchemaError, match="dated future"):
        instrument("binance", "BTCUSDT_210625", "perp", "x")


def test_a_markets_dump_in_the_hints_names_the_symbol(holdout):
    path = holdout / "nautilus" / "tardis__binance-futures_book_snapshot_5_BTCUSDT.csv"
    perp = {"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "spot": False, "swap": True}
    books = read(path, FileHints(markets={"binance": {"BTC/USDT:USDT": perp}}))["books"]
    assert set(books["symbol"]) == {"BTC/USDT:USDT"}
    other = {"id": "ETHUSDT", "symbol": "ETH/USDT:USDT", "spot": False, "swap": True}
    with pytest.raises(SchemaError, match="the markets dump of binance has no market with id 'BTCUSDT' for perp"):
        read(path, FileHints(markets={"binance": {"ETH/USDT:USDT": other}}))
    spot_only = {"BTC/USDT": {"id": "BTCUSDT", "symbol": "BTC/USDT", "spot": True, "swap": False}}
    inferred = read(path, FileHints(markets={"binance": spot_only, "okx": {}}))["books"]  # says nothing of perps
    assert set(inferred["symbol"]) == {"BTC/USDT:USDT"}


PEAK_MEMORY_OF_A_READ = textwrap.dedent("""
    import re, sys
    from pathlib import Path
    from sofia_pipelines.defs.market_data.formats import FileHints, format_of

    def status(key):
        return int(re.search(key + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024

    path = Path(sys.argv[1])
    fmt = format_of(path)
    base = status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
    rows = sum(frame.height for _, frame in fmt.read(path, FileHints()))
    print(rows, status("VmHWM") - base)
""")


def _peak_growth_mb(path: Path) -> tuple[int, float]:
    done = subprocess.run([sys.executable, "-c", PEAK_MEMORY_OF_A_READ, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    rows, grown = done.stdout.split()
    return int(rows), float(grown)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from Linux's /proc")
def test_a_large_file_is_read_in_bounded_memory(tmp_path):
    n = 2_000_000
    rng = np.random.default_rng(7)
    us = 1583020800000000 + np.cumsum(rng.integers(0, 2000, n))
    ids = pl.Series(rng.integers(0, 2**62, n)).cast(pl.Utf8)
    frame = pl.DataFrame({"exchange": "bitmex", "symbol": "XBTUSD", "timestamp": us, "local_timestamp": us + 50_000,
                          "id": ids + "-212c-e8b0-1706-" + ids.str.slice(0, 12),  # as long as BitMEX's UUIDs
                          "side": np.where(rng.random(n) < 0.5, "buy", "sell"),
                          "price": np.round(8500 + rng.normal(0, 5, n), 1), "amount": rng.integers(1, 5000, n)})
    quarter, whole = tmp_path / "quarter" / "bitmex_trades_XBTUSD.csv", tmp_path / "bitmex_trades_XBTUSD.csv"
    quarter.parent.mkdir()
    frame.head(n // 4).write_csv(quarter)
    frame.write_csv(whole)
    del frame, ids
    size_mb = whole.stat().st_size / 2**20
    rows_quarter, grown_quarter = _peak_growth_mb(quarter)
    rows, grown = _peak_growth_mb(whole)
    assert (rows_quarter, rows) == (n // 4, n)
    # four times the rows, (nearly) the same peak: memory follows the batch, not the file
    assert grown < 1.3 * grown_quarter + 20, f"peak grew {grown:.0f} MB for {n} rows, {grown_quarter:.0f} MB for a quarter"
    # reading the whole file as text at once takes about three times its size
    assert grown < 1.5 * size_mb, f"peak grew {grown:.0f} MB reading a {size_mb:.0f} MB file"
