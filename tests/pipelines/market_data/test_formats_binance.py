"""Binance public-data archive CSVs read by the files source's formats: the real files NautilusTrader keeps,
read in place, and small hand-made files in the archives' layouts for each error."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from sofia_pipelines.defs.market_data.formats import FileHints, format_of
from sofia_runtime.schemas import SchemaError

from formats_support import read, write


def test_header_less_klines_take_symbol_and_timeframe_from_the_file_name(holdout):
    path = holdout / "nautilus" / "ADABTC-1m-2021-11-27.csv"
    assert format_of(path).name == "binance_klines"
    candles = read(path)["candles"]
    assert candles.height == 10
    assert set(candles["venue"]) == {"binance"} and set(candles["symbol"]) == {"ADA/BTC"}
    assert set(candles["market"]) == {"spot"} and set(candles["timeframe"]) == {"1m"}
    first = candles.row(0, named=True)
    assert first["ts"] == datetime(2021, 11, 27)
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == \
        (0.00002853, 0.00002854, 0.00002851, 0.00002854, 36304.2)
    assert candles["ts"].max() == datetime(2021, 11, 27, 0, 9)
    next_day = read(holdout / "nautilus" / "ADABTC-1m-2021-11-28.csv")["candles"]
    assert next_day.height == 11 and next_day["ts"].max() == datetime(2021, 11, 28, 0, 10)
    assert next_day.row(-1, named=True)["volume"] == 12248.3


def test_klines_in_microseconds_and_with_a_header_read_the_same(tmp_path, holdout):
    lines = (holdout / "nautilus" / "ADABTC-1m-2021-11-27.csv").read_text().splitlines()
    micro = [f"{int(cells[0]) * 1000},{','.join(cells[1:6])},{int(cells[6]) * 1000 + 999},{','.join(cells[7:])}"
             for cells in (line.split(",") for line in lines)]
    as_ms = read(holdout / "nautilus" / "ADABTC-1m-2021-11-27.csv")["candles"]
    as_us = read(write(tmp_path, "ADABTC-1m-2025-01-02.csv", "\n".join(micro) + "\n"))["candles"]
    assert as_us.equals(as_ms)
    header = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume," \
             "taker_buy_quote_volume,ignore"
    futures = write(tmp_path, "klines.csv", header + "\n" + "\n".join(lines) + "\n")
    with_header = read(futures, FileHints(symbol="ADA/BTC", market="spot", timeframe="1m"))["candles"]
    assert with_header.equals(as_ms)


def test_klines_without_a_timeframe_anywhere_are_refused(tmp_path):
    header = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume," \
             "taker_buy_quote_volume,ignore"
    path = write(tmp_path, "klines.csv", header + "\n1637971200000,1,1,1,1,1,1637971259999,1,1,1,1,0\n")
    with pytest.raises(SchemaError, match="timeframe"):
        read(path, FileHints(symbol="ADA/BTC"))


def test_depth_snapshot_then_updates_rebuild_the_top_of_book(tmp_path, holdout):
    snap = (holdout / "nautilus" / "binance__btcusdt-depth-snap.csv").read_text().splitlines()
    update = (holdout / "nautilus" / "binance__btcusdt-depth-update.csv").read_text().splitlines()
    path = write(tmp_path, "BTCUSDT-depth.csv", "\n".join([*snap, *update[1:]]) + "\n")
    books = read(path)["books"]
    # the snapshot (2022-11-01 23:49:39.146) holds bids only: no top of book until the updates bring asks
    columns = ("venue", "symbol", "market", "ts", "local_ts", "bid", "ask", "bid_size", "ask_size")
    assert books.select(columns).rows() == [("binance", "BTC/USDT:USDT", "perp", datetime(2022, 11, 2), None,
                                             20472.1, 20472.2, 22.276, 4.211)]


def test_real_depth_files_alone_are_refused_with_the_reason(holdout):
    with pytest.raises(SchemaError, match=r"bids: 100 levels, asks: 0"):
        read(holdout / "nautilus" / "binance__btcusdt-depth-snap.csv")
    with pytest.raises(SchemaError, match="and no snapshot") as err:
        read(holdout / "nautilus" / "binance__btcusdt-depth-update.csv")
    assert (err.value.row, err.value.field) == (1, "update_type")


def test_depth_delete_and_a_new_snapshot(tmp_path):
    path = write(tmp_path, "depth.csv", """
        symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu
        BTCUSDT,1667346579146,10,10,b,snap,100.0,1,-1
        BTCUSDT,1667346579146,10,10,b,snap,99.0,2,-1
        BTCUSDT,1667346579146,10,10,a,snap,101.0,3,-1
        BTCUSDT,1667346580100,11,12,b,delete,100.0,1,10
        BTCUSDT,1667346581200,20,20,b,snap,98.0,4,-1
        BTCUSDT,1667346581200,20,20,a,snap,102.0,5,-1
    """)
    books = read(path)["books"]
    assert books.select("ts", "bid", "bid_size", "ask").rows() == [
        (datetime(2022, 11, 1, 23, 49, 40), 100.0, 1.0, 101.0),
        (datetime(2022, 11, 1, 23, 49, 41), 99.0, 2.0, 101.0),
        (datetime(2022, 11, 1, 23, 49, 42), 98.0, 4.0, 102.0),
    ]


def test_trades_with_and_without_header_give_the_taker_side(tmp_path):
    rows = "51175358,17.80180000,5.69000000,101.29224200,1583709433583,True,True\n" \
           "51175359,17.80190000,1.00000000,17.80190000,1583709433584,False,True\n"
    spot = read(write(tmp_path, "BNBUSDT-trades-2020-03-08.csv", rows))["trades"]
    assert spot.select("symbol", "market", "trade_id", "side", "price", "amount").rows() == [
        ("BNB/USDT", "spot", "51175358", "sell", 17.8018, 5.69), ("BNB/USDT", "spot", "51175359", "buy", 17.8019, 1.0)]
    assert spot["ts"][0] == datetime(2020, 3, 8, 23, 17, 13, 583000)
    futures = write(tmp_path, "BTCUSDT-trades-2023-01-01.csv",
                    "id,price,qty,quote_qty,time,is_buyer_maker\n3172150211,16537.6,0.01,165.376,1672531200058,true\n")
    perp = read(futures, FileHints(market="perp"))["trades"]
    assert perp.select("symbol", "side").rows() == [("BTC/USDT:USDT", "sell")]
    coin_m = write(tmp_path, "BTCUSD_PERP-trades-2023-01-01.csv",
                   "id,price,qty,base_qty,time,is_buyer_maker\n28457,9635.0,1,0.01037883,1591250192508,false\n")
    inverse = read(coin_m, FileHints(market="perp"))["trades"]
    assert inverse.select("symbol", "side", "amount").rows() == [("BTC/USD:BTC", "buy", 1.0)]


def test_the_market_comes_from_the_archive_path_or_the_header(tmp_path, holdout):
    kline = (holdout / "nautilus" / "ADABTC-1m-2021-11-27.csv").read_text()
    folder = tmp_path / "data" / "futures" / "um" / "daily" / "klines" / "BTCUSDT" / "1m"
    folder.mkdir(parents=True)
    (folder / "BTCUSDT-1m-2021-11-27.csv").write_text(kline)
    futures = read(folder / "BTCUSDT-1m-2021-11-27.csv")["candles"]
    assert set(futures["symbol"]) == {"BTC/USDT:USDT"} and set(futures["market"]) == {"perp"}
    headed = write(tmp_path, "BTCUSDT-trades-2023-01-01.csv",
                   "id,price,qty,quote_qty,time,is_buyer_maker\n3172150211,16537.6,0.01,165.376,1672531200058,true\n")
    assert read(headed)["trades"]["symbol"].to_list() == ["BTC/USDT:USDT"]
    spot = tmp_path / "data" / "spot" / "daily" / "trades" / "BTCUSDT"
    spot.mkdir(parents=True)
    (spot / headed.name).write_text(headed.read_text())
    assert read(spot / headed.name)["trades"]["symbol"].to_list() == ["BTC/USDT"]


def test_agg_trades_keep_their_own_ids(tmp_path):
    path = write(tmp_path, "ETHBTC-aggTrades-2020-12-25.csv",
                 "0,0.20000000,50.00000000,0,0,1608872400000,False,True\n"
                 "1,0.20000100,1.00000000,1,3,1608872400001,True,True\n")
    trades = read(path)["trades"]
    assert trades.select("symbol", "trade_id", "side", "amount").rows() == [
        ("ETH/BTC", "a0", "buy", 50.0), ("ETH/BTC", "a1", "sell", 1.0)]


def test_book_ticker_and_funding_rate(tmp_path):
    ticker = write(tmp_path, "BTCUSDT-bookTicker-2023-01-01.csv", """
        update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time
        2418637252553,16537.5,3.5,16537.6,10.1,1672531200003,1672531200008
        2418637252600,16537.5,3.4,16537.6,10.1,1672531200003,1672531200009
        2418637252700,16537.4,1.0,16537.6,9.0,1672531200150,1672531200155
    """)
    books = read(ticker)["books"]
    assert books.select("symbol", "ts", "local_ts", "bid", "bid_size").rows() == [
        ("BTC/USDT:USDT", datetime(2023, 1, 1, 0, 0, 0, 3000), datetime(2023, 1, 1, 0, 0, 0, 9000), 16537.5, 3.4),
        ("BTC/USDT:USDT", datetime(2023, 1, 1, 0, 0, 0, 150000), datetime(2023, 1, 1, 0, 0, 0, 155000), 16537.4, 1.0)]
    funding_file = write(tmp_path, "BTCUSDT-fundingRate-2023-01.csv", """
        calc_time,funding_interval_hours,last_funding_rate
        1672531200000,8,0.00010000
        1672560000000,8,-0.00002345
    """)
    funding = read(funding_file)["funding"]
    assert funding.rows() == [("binance", "BTC/USDT:USDT", datetime(2023, 1, 1, 0), 0.0001, None, None),
                              ("binance", "BTC/USDT:USDT", datetime(2023, 1, 1, 8), -0.00002345, None, None)]
    with pytest.raises(SchemaError, match="perp's"):
        read(funding_file, FileHints(market="spot"))


@pytest.mark.parametrize("name, text, row, field", [
    ("ADABTC-1m-2021-11-27.csv", "1637971200000,0.1,0.1,0.1,0.1,1,1637971259999,1,1,1,1,0\n"
                                 "1637971260000,0.1,x,0.1,0.1,1,1637971319999,1,1,1,1,0\n", 2, "high"),
    ("ADABTC-1m-2021-11-27.csv", "1637971200000,0.1,0.1,0.1,0.1,1,1637971259999,1,1,1,1,0\n"
                                 "1637971260000000,0.1,0.1,0.1,0.1,1,1637971319999,1,1,1,1,0\n", 2, "open_time"),
    ("BNBUSDT-trades-2020-03-08.csv", "51175358,17.8,5.69,101.2,1583709433583,True,True\n"
                                      "51175359,17.8,1.0,17.8,1583709433584,Maybe,True\n", 2, "is_buyer_maker"),
    ("BNBUSDT-trades-2020-03-08.csv", "51175358,17.8,5.69,101.2,1583709433583,True,True\n"
                                      "51175359,17.8,1.0,17.8,1583709433584,True\n", 2, None),
    ("depth.csv", "symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu\n"
                  "BTCUSDT,1667346579146,10,10,b,snap,100.0,1,-1\nBTCUSDT,1667346579146,10,10,x,snap,99.0,2,-1\n",
     2, "side"),
    ("depth.csv", "symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu\n"
                  "BTCUSDT,1667346579146,10,10,b,snapshot,100.0,1,-1\n", 1, "update_type"),
    ("BTCUSDT-fundingRate-2023-01.csv", "calc_time,funding_interval_hours,last_funding_rate\n"
                                        "1672531200000,8,\n", 1, "last_funding_rate"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, name, text, row, field):
    path = write(tmp_path, name, text)
    with pytest.raises(SchemaError) as err:
        read(path)
    assert (err.value.origin, err.value.row, err.value.field) == (str(path), row, field)


def test_a_header_less_file_with_an_unknown_name_is_no_binance_format(tmp_path):
    path = write(tmp_path, "prices.csv", "1637971200000,0.1,0.1,0.1,0.1,1,1637971259999,1,1,1,1,0\n")
    from sofia_pipelines.defs.market_data.formats.binance import FORMATS

    head = path.read_bytes()
    assert not any(fmt.matches(path, head) for fmt in FORMATS)
