"""Each format of the files source on the real held-out files (read in place through symlinks), with the
figures their SOURCE.md states, and small hand-made bad files for each error."""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pyarrow.feather as feather
import pytest

from sofia_pipelines.defs.market_data.files import FilesSource
from sofia_pipelines.defs.market_data.formats import FileHints, format_of
from sofia_runtime.schemas import RAW_TABLES, SchemaError

ALL = (datetime(1990, 1, 1), datetime(2100, 1, 1))


def _link(root: Path, holdout: Path, *names: str, into: str = "") -> Path:
    """Symlink held-out files into `root[/into]` under their own names."""
    folder = root / into
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / Path(name).name).symlink_to(holdout / name)
    return root


def _span(df: pl.DataFrame) -> tuple[int, datetime, datetime]:
    return df.height, df["ts"].min(), df["ts"].max()


def test_freqtrade_spot_1m_and_5m_parquet(tmp_path, holdout):
    root = _link(tmp_path, holdout, "freqtrade/spot/bittrex_ADA_BTC_1m.parquet",
                 "freqtrade/spot/bittrex_ADA_BTC_5m.parquet", "freqtrade/spot/binance_XRP_ETH_1m.parquet",
                 "freqtrade/spot/binance_XRP_ETH_5m.parquet", "freqtrade/SOURCE.md")
    src = FilesSource(root)
    assert src.provides() == {"candles"}
    assert src.ignored() == {"SOURCE.md": "documentation or hidden file"}
    df = src.load("candles", *ALL)
    assert df.schema == RAW_TABLES["candles"].polars_schema
    by = {(v, s, tf): g for (v, s, tf), g in df.group_by("venue", "symbol", "timeframe")}
    assert set(by) == {("bittrex", "ADA/BTC", "1m"), ("bittrex", "ADA/BTC", "5m"), ("binance", "XRP/ETH", "1m"),
                       ("binance", "XRP/ETH", "5m")}
    assert _span(by["bittrex", "ADA/BTC", "1m"]) == (14383, datetime(2018, 1, 20, 4, 55), datetime(2018, 1, 30, 4, 51))
    assert _span(by["bittrex", "ADA/BTC", "5m"]) == (5720, datetime(2018, 1, 10, 4, 55), datetime(2018, 1, 30, 4, 50))
    assert _span(by["binance", "XRP/ETH", "1m"]) == (3560, datetime(2019, 10, 11), datetime(2019, 10, 13, 11, 19))
    assert _span(by["binance", "XRP/ETH", "5m"]) == (712, datetime(2019, 10, 11), datetime(2019, 10, 13, 11, 15))
    # Binance fills minutes without trades with zero-volume bars: kept as they are
    assert (by["binance", "XRP/ETH", "1m"]["volume"] == 0).sum() == 1091
    assert set(df["market"].unique()) == {"spot"}
    # a day's window holds the bars of that day only
    day = src.load("candles", datetime(2019, 10, 12), datetime(2019, 10, 13))
    assert day.filter(pl.col("timeframe") == "1m").height == 1440
    assert src.available_days()[0] == date(2018, 1, 10) and src.available_days()[-1] == date(2019, 10, 13)


def test_freqtrade_futures_candles_of_each_timeframe_and_8h_funding(tmp_path, holdout):
    names = [f"freqtrade/futures/binance_XRP_USDT_USDT_{n}.parquet"
             for n in ("1h_futures", "5m_futures", "1h_mark", "8h_mark", "8h_funding_rate")]
    src = FilesSource(_link(tmp_path, holdout, *names))
    assert src.provides() == {"candles", "funding"}
    # mark-price candles are not trades' prices: listed, not loaded
    assert set(src.ignored()) == {"binance_XRP_USDT_USDT_1h_mark.parquet", "binance_XRP_USDT_USDT_8h_mark.parquet"}
    candles = src.load("candles", *ALL)
    assert set(candles["venue"].unique()) == {"binance"} and set(candles["symbol"].unique()) == {"XRP/USDT:USDT"}
    assert set(candles["market"].unique()) == {"perp"}
    hourly = candles.filter(pl.col("timeframe") == "1h")
    assert _span(hourly) == (100, datetime(2021, 11, 17, 1), datetime(2021, 11, 21, 4))
    assert _span(candles.filter(pl.col("timeframe") == "5m")) == (1999, datetime(2021, 11, 15),
                                                                  datetime(2021, 11, 21, 22, 30))
    funding = src.load("funding", *ALL)
    assert funding["venue"].unique().to_list() == ["binance"]  # the venue, not the folder name
    assert funding["symbol"].unique().to_list() == ["XRP/USDT:USDT"]
    assert funding.height == 91
    assert funding["ts"][0] == datetime(2021, 11, 18, 0, 0, 0, 17000)  # 17 ms off the boundary, kept
    assert (funding["ts"].dt.millisecond() > 0).sum() == 59
    assert funding["ts"].max().date() == date(2021, 12, 18)
    assert funding["mark_price"].null_count() == 91


def test_freqtrade_trades_parquet_and_ccxt_trades_json_gz_agree(tmp_path, holdout):
    root = _link(tmp_path, holdout, "freqtrade/trades/binance_XRP_ETH_trades.parquet", into="parquet")
    _link(tmp_path, holdout, "freqtrade/raw/binance_XRP_ETH_ccxt_trades.json.gz", into="ccxt")
    parquet = FilesSource(root / "parquet").load("trades", *ALL)
    ccxt = FilesSource(root / "ccxt").load("trades", *ALL)
    for df in (parquet, ccxt):
        assert _span(df) == (12477, datetime(2019, 10, 11, 0, 0, 11, 620000),
                             datetime(2019, 10, 13, 11, 19, 28, 844000))
        assert df["venue"].unique().to_list() == ["binance"] and df["symbol"].unique().to_list() == ["XRP/ETH"]
    assert parquet.select("ts", "trade_id", "side", "price", "amount").equals(
        ccxt.select("ts", "trade_id", "side", "price", "amount"))


def test_kraken_trades_without_side_or_id_are_refused_naming_what_is_missing(tmp_path, holdout):
    root = _link(tmp_path, holdout, "freqtrade/trades/kraken_BCH_EUR_trades.parquet")
    with pytest.raises(SchemaError, match=r"kraken_BCH_EUR_trades\.parquet, field 'side': trades need `side`"):
        FilesSource(root).load("trades", *ALL)


def test_venue_funding_history_responses(tmp_path, holdout):
    names = ["okx__test_data__http_get_funding_rate_history.json", "bybit__test_data__http_get_funding_history.json",
             "binance__resources__http_responses__http_futures_market_funding_rate.json",
             "hyperliquid__test_data__http_funding_history.json"]
    src = FilesSource(_link(tmp_path, holdout, *(f"nautilus/{n}" for n in names)))
    df = src.load("funding", *ALL)
    rows = {(r["venue"], r["symbol"], r["ts"]): r["funding_rate"] for r in df.iter_rows(named=True)}
    assert rows == {
        ("okx", "BTC/USDT:USDT", datetime(2023, 12, 31, 16)): pytest.approx(-0.0000236017),
        ("okx", "BTC/USDT:USDT", datetime(2024, 1, 1)): pytest.approx(0.0001515032),
        ("bybit", "BTC/USDT:USDT", datetime(2024, 3, 8, 0)): pytest.approx(0.00015),
        ("bybit", "BTC/USDT:USDT", datetime(2024, 3, 8, 8)): pytest.approx(0.0001),
        ("binance", "BTC/USDT:USDT", datetime(2019, 10, 9, 8)): pytest.approx(-0.0375),  # the first funding ever
        ("binance", "BTC/USDT:USDT", datetime(2019, 10, 9, 16)): pytest.approx(0.0001),
        ("hyperliquid", "BTC/USDC:USDC", datetime(2026, 2, 1, 1, 20)): pytest.approx(0.0000125),
        ("hyperliquid", "BTC/USDC:USDC", datetime(2026, 2, 1, 2, 20)): pytest.approx(-0.0000081),
        ("hyperliquid", "BTC/USDC:USDC", datetime(2026, 2, 1, 3, 20)): pytest.approx(0.0000033),
    }
    # okx and bybit answer newest-first; stored oldest-first, as ccxt parses them
    okx = df.filter(pl.col("venue") == "okx")
    assert okx["ts"].is_sorted()


def test_ccxt_funding_rate_history_json(tmp_path, holdout):
    # ccxt's fetch_funding_rate_history output for the real OKX payload: the entries okx.fetch_funding_rate_history
    # builds (info, symbol, fundingRate, timestamp, datetime), sorted by time
    import ccxt

    payload = json.loads((holdout / "nautilus/okx__test_data__http_get_funding_rate_history.json").read_text())
    okx = ccxt.okx()
    history = okx.sort_by([{"info": r, "symbol": "BTC/USDT:USDT", "fundingRate": okx.safe_number(r, "fundingRate"),
                            "timestamp": okx.safe_integer(r, "fundingTime"),
                            "datetime": okx.iso8601(okx.safe_integer(r, "fundingTime"))} for r in payload["data"]],
                          "timestamp")
    (tmp_path / "okx").mkdir()
    (tmp_path / "okx" / "funding.json").write_text(json.dumps(history))
    with pytest.raises(SchemaError, match="do not name \\['venue'\\]"):
        FilesSource(tmp_path).load("funding", *ALL)
    path = tmp_path / "funding" / "okx"
    path.mkdir(parents=True)
    (tmp_path / "okx" / "funding.json").rename(path / "BTC_USDT_USDT.json")
    df = FilesSource(tmp_path).load("funding", *ALL)
    assert df.select("venue", "symbol", "ts", "funding_rate").rows() == [
        ("okx", "BTC/USDT:USDT", datetime(2023, 12, 31, 16), pytest.approx(-0.0000236017)),
        ("okx", "BTC/USDT:USDT", datetime(2024, 1, 1), pytest.approx(0.0001515032))]


def test_ccxt_response_tests_read_their_ohlcv(tmp_path, holdout):
    root = _link(tmp_path, holdout, "ccxt/response/binance.json", "ccxt/response/bybit.subset.json",
                 "ccxt/response/okx.subset.json")
    df = FilesSource(root).load("candles", *ALL)
    keys = df.group_by("venue", "symbol", "market", "timeframe").len().sort("venue", "symbol").rows()
    # binance's 1d BTC/USD:BTC case asks for index-price klines: not traded prices, not loaded
    assert keys == [("binance", "BTC/USDT", "spot", "1h", 3), ("binance", "BTC/USDT:USDT", "perp", "1m", 3),
                    ("bybit", "BTC/USDT:USDT", "perp", "1h", 3)]
    first = df.filter((pl.col("venue") == "binance") & (pl.col("symbol") == "BTC/USDT")).row(0, named=True)
    assert (first["ts"], first["open"], first["close"], first["volume"]) == (
        datetime(2024, 1, 30, 16), 43519.34, 43488.71, 20.55495)


def test_freqtrade_own_layout_feather_parquet_and_json(tmp_path, holdout):
    spot = pl.read_parquet(holdout / "freqtrade/spot/binance_XRP_ETH_5m.parquet")
    perp = pl.read_parquet(holdout / "freqtrade/futures/binance_XRP_USDT_USDT_1h_futures.parquet")
    data = tmp_path / "user_data" / "data" / "binance"
    (data / "futures").mkdir(parents=True)
    feather.write_feather(spot.to_arrow(), data / "XRP_ETH-5m.feather")
    (data / "XRP_ETH-1d.json").write_text(json.dumps(
        spot.group_by_dynamic(pl.from_epoch("timestamp", time_unit="ms").alias("d"), every="1d").agg(
            pl.col("timestamp").first(), pl.col("open").first(), pl.col("high").max(), pl.col("low").min(),
            pl.col("close").last(), pl.col("volume").sum()).drop("d").rows()))
    perp.write_parquet(data / "futures" / "XRP_USDT_USDT-1h-futures.parquet")
    df = FilesSource(tmp_path / "user_data" / "data").load("candles", *ALL)
    keys = df.group_by("venue", "symbol", "market", "timeframe").len().sort("timeframe").rows()
    assert keys == [("binance", "XRP/ETH", "spot", "1d", 3), ("binance", "XRP/USDT:USDT", "perp", "1h", 100),
                    ("binance", "XRP/ETH", "spot", "5m", 712)]


def test_timestamps_in_seconds_micro_and_nanoseconds_read_alike(tmp_path, holdout):
    bars = pl.read_parquet(holdout / "freqtrade/spot/binance_XRP_ETH_1m.parquet").head(50)
    expected = pl.from_epoch(bars["timestamp"], time_unit="ms")
    for unit, factor in (("s", 1 / 1000), ("us", 1000), ("ns", 1_000_000)):
        folder = tmp_path / unit / "ohlcv" / "binance" / "XRP_ETH"
        folder.mkdir(parents=True)
        scaled = bars.with_columns(pl.col("timestamp") * factor)
        if unit != "s":
            scaled = scaled.with_columns(pl.col("timestamp").cast(pl.Int64))
        scaled.write_csv(folder / "1m.csv")
        df = FilesSource(tmp_path / unit).load("candles", *ALL)
        assert df["ts"].to_list() == expected.to_list(), unit  # seconds are not read as milliseconds (1970)
    zoned = bars.with_columns(pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC")
                              .dt.convert_time_zone("Europe/Istanbul").dt.strftime("%Y-%m-%dT%H:%M:%S%:z")
                              .alias("date")).drop("timestamp")
    folder = tmp_path / "iso" / "ohlcv" / "binance" / "XRP_ETH"
    folder.mkdir(parents=True)
    zoned.write_csv(folder / "1m.csv")
    assert FilesSource(tmp_path / "iso").load("candles", *ALL)["ts"].to_list() == expected.to_list()


def _candle_csv(root: Path, text: str, name: str = "1m.csv") -> Path:
    folder = root / "ohlcv" / "binance" / "XRP_ETH"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


GOOD = "1570752000000,1,2,0.5,1.5,10\n1570752060000,1.5,2,1,1.2,5\n"


@pytest.mark.parametrize("body, row, field, message", [
    ("1570752000,1,2,0.5,1.5,10\n1570752060000,1.5,2,1,1.2,5\n", 2, "timestamp",
     "in ms while the file's times are in s"),
    ("57075200,1,2,0.5,1.5,10\n", 1, "timestamp", "is not an epoch time"),
    (GOOD + "1570752120000,1,0.9,1.1,1,3\n", 3, "high", "high 0.9 is below open 1.0"),
    (GOOD + "1570752120000,3,4,2,5,3\n", 3, "high", "high 4.0 is below close 5.0"),
    (GOOD + "1570752120000,1.5,2,1.6,1.8,3\n", 3, "open", "open 1.5 is below low 1.6"),
    (GOOD + "1570752120000,1,2,0.5,1.5,-1\n", 3, "volume", "volume -1.0 is negative"),
    (GOOD + "1570752120000,1,2,0.5,abc,1\n", 3, "close", "'abc' is not a valid Float64"),
])
def test_bad_candle_rows_name_file_row_and_field(tmp_path, body, row, field, message):
    path = _candle_csv(tmp_path, "timestamp,open,high,low,close,volume\n" + body)
    with pytest.raises(SchemaError) as err:
        FilesSource(tmp_path).load("candles", *ALL)
    assert str(err.value).startswith(f"{path}, row {row}, field '{field}': ")
    assert message in str(err.value)


def test_file_in_no_known_format_is_an_error_naming_it_and_what_was_expected(tmp_path):
    _candle_csv(tmp_path, "timestamp,open,high,low,close,volume\n" + GOOD)
    strange = tmp_path / "notes" / "positions.csv"
    strange.parent.mkdir()
    strange.write_text("account,asset,qty\nmain,BTC,1\n")
    (tmp_path / "README.md").write_text("what is here")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1\2")
    src = FilesSource(tmp_path)
    with pytest.raises(SchemaError) as err:
        src.provides()
    assert str(err.value).startswith(f"{strange}: not a file in a known format; expected one of [")
    assert "CSV with a header naming the columns" in str(err.value)
    strange.unlink()
    assert src.provides() == {"candles"}
    assert src.ignored() == {"README.md": "documentation or hidden file", ".DS_Store": "documentation or hidden file"}


def test_wrong_layout_and_missing_hints_are_errors(tmp_path):
    folder = tmp_path / "ohlcv" / "binance"
    folder.mkdir(parents=True)
    (folder / "1m.csv").write_text("timestamp,open,high,low,close,volume\n" + GOOD)
    with pytest.raises(SchemaError, match=r"ohlcv/<venue>/<BASE>_<QUOTE>\[_<SETTLE>\]/<timeframe>"):
        FilesSource(tmp_path).provides()
    (folder / "1m.csv").rename(tmp_path / "candles.csv")
    folder.rmdir()
    with pytest.raises(SchemaError,
                       match=r"candles\.csv: the file's rows do not name \['venue', 'symbol', 'timeframe'\]"):
        FilesSource(tmp_path).load("candles", *ALL)


def test_same_series_in_two_files_is_refused_naming_both(tmp_path):
    first = _candle_csv(tmp_path, "timestamp,open,high,low,close,volume\n" + GOOD)
    second = _candle_csv(tmp_path, json.dumps([[1570752000000, 1, 2, 0.5, 1.5, 10]]), "1m.json")
    with pytest.raises(SchemaError) as err:
        FilesSource(tmp_path).load("candles", *ALL)
    assert str(first) in str(err.value) and str(second) in str(err.value)


def test_available_days_read_only_the_time_column(tmp_path):
    # a bad price is found when the rows are loaded; listing the days does not read prices
    _candle_csv(tmp_path, "timestamp,open,high,low,close,volume\n" + GOOD + "1570838400000,1,2,0.5,NaN,1\n")
    src = FilesSource(tmp_path)
    assert src.available_days() == [date(2019, 10, 11), date(2019, 10, 12)]
    with pytest.raises(SchemaError, match="row 3, field 'close'"):
        src.load("candles", *ALL)


def test_gzip_head_is_read_for_matching(tmp_path):
    path = tmp_path / "trades.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump([{"id": "1", "timestamp": 1570752011620, "side": "buy", "price": 0.0014, "amount": 2.0}], fh)
    assert format_of(path).name.startswith("ccxt fetch_trades JSON")
    assert list(format_of(path).read(path, FileHints("binance", "XRP/ETH", "spot")))[0][1].height == 1


def test_a_real_quote_and_trade_tape_in_named_columns(tmp_path, holdout):
    """Binance spot BTC/USDT best bid/ask with sizes and the trades of the same minutes (the rows name the symbol,
    the file name the venue). The quotes have 451 updates on 428 distinct milliseconds: raw.books holds one book
    per millisecond, as every book format is read, and the last update of a millisecond is the book then. The
    trades say `quantity` and `buyer_maker` (the buyer was the maker: the taker sold)."""
    (tmp_path / "binance_BTC_USDT_quotes.parquet").symlink_to(holdout / "nautilus/binance__btcusdt-quotes.parquet")
    (tmp_path / "binance_BTC_USDT_trades.parquet").symlink_to(holdout / "nautilus/binance__btcusdt-trades.parquet")
    src = FilesSource(tmp_path)
    assert src.provides() == {"books", "trades"}
    assert src.available_days() == [date(2021, 1, 8)]
    books = src.load("books", *ALL)
    quotes = pl.read_parquet(holdout / "nautilus/binance__btcusdt-quotes.parquet")
    last = quotes.unique("timestamp", keep="last", maintain_order=True)
    assert books.height == last.height == 428
    assert books["ts"][0] == datetime(2021, 1, 8, 0, 0, 1, 76000)
    assert books.select("bid", "ask").rows() == last.select("bid", "ask").rows()
    at = books.filter(pl.col("ts") == datetime(2021, 1, 8, 0, 0, 2, 573000))  # two updates in that millisecond
    assert at.select("bid", "ask").rows() == quotes.filter(
        pl.col("timestamp").dt.replace_time_zone(None) == datetime(2021, 1, 8, 0, 0, 2, 573000)
    ).tail(1).select("bid", "ask").rows()
    assert books.select("venue", "symbol", "market").unique().rows() == [("binance", "BTC/USDT", "spot")]
    assert (books["ask"] > books["bid"]).all() and books["local_ts"].null_count() == 428
    trades = src.load("trades", *ALL)
    assert trades.height == 2001 and trades["trade_id"][0] == "553287559"
    assert trades.filter(pl.col("side") == "sell").height == \
        pl.read_parquet(holdout / "nautilus/binance__btcusdt-trades.parquet").filter(
            pl.col("buyer_maker") == "True").height == 914


def test_a_trades_file_without_a_side_or_a_buyer_maker_flag_is_refused(tmp_path):
    path = tmp_path / "binance_BTC_USDT_trades.csv"
    path.write_text("timestamp,trade_id,price,quantity\n1610064000278,1,39432.48,0.1\n")
    with pytest.raises(SchemaError, match="field 'side': trades need `side`"):
        FilesSource(tmp_path).load("trades", *ALL)
    path.write_text("timestamp,trade_id,price,quantity,buyer_maker\n1610064000278,1,39432.48,0.1,maybe\n")
    with pytest.raises(SchemaError, match="row 1, field 'buyer_maker': 'maybe' is not true or false"):
        FilesSource(tmp_path).load("trades", *ALL)


def test_latency_and_fx_csv_in_sofia_columns(tmp_path):
    (tmp_path / "latency.csv").write_text("venue,endpoint,ts,latency_ms,ok,error\n"
                                          "binance,public_rest,2026-10-25T00:00:00Z,41.5,true,\n"
                                          "binance,public_rest,2026-10-25T00:01:00Z,,false,RequestTimeout\n")
    (tmp_path / "fx.csv").write_text("pair,ts,rate\nUSD/TRY,1761350400,41.9\nUSD/TRY,1761354000,41.95\n")
    src = FilesSource(tmp_path)
    assert src.provides() == {"latency", "fx"}
    latency = src.load("latency", *ALL)
    assert latency.select("ok", "latency_ms", "error").rows() == [(True, 41.5, None), (False, None, "RequestTimeout")]
    assert src.load("fx", *ALL).select("ts", "rate").rows() == [(datetime(2025, 10, 25), 41.9),
                                                                (datetime(2025, 10, 25, 1), 41.95)]
    (tmp_path / "latency.csv").write_text("venue,endpoint,ts,latency_ms,ok,error\n"
                                          "binance,public_rest,2026-10-25T00:00:00Z,41.5,perhaps,\n")
    with pytest.raises(SchemaError, match="row 1, field 'ok': 'perhaps' is not true or false"):
        FilesSource(tmp_path).load("latency", *ALL)


def test_a_symlink_loop_is_walked_once(tmp_path):
    _candle_csv(tmp_path, "timestamp,open,high,low,close,volume\n" + GOOD)
    (tmp_path / "ohlcv" / "again").symlink_to(tmp_path, target_is_directory=True)
    assert FilesSource(tmp_path).load("candles", *ALL).height == 2


def test_an_ohlcv_file_must_be_named_by_its_timeframe(tmp_path):
    path = _candle_csv(tmp_path, "timestamp,open,high,low,close,volume\n" + GOOD, "minute.csv")
    with pytest.raises(SchemaError, match=f"{path}: a file under ohlcv/ must be"):
        FilesSource(tmp_path).provides()


def test_binance_funding_response_keeps_the_mark_price_where_it_has_one(tmp_path, holdout):
    # newer /fapi/v1/fundingRate answers add markPrice (empty for old events): the real payload with one added
    rows = json.loads((holdout / "nautilus/binance__resources__http_responses__http_futures_market_funding_rate.json")
                      .read_text())
    rows[0]["markPrice"], rows[1]["markPrice"] = "", "8234.56000000"
    (tmp_path / "binance_funding.json").write_text(json.dumps(rows))
    df = FilesSource(tmp_path).load("funding", *ALL)
    assert df.select("ts", "funding_rate", "mark_price").rows() == [
        (datetime(2019, 10, 9, 8), -0.0375, None), (datetime(2019, 10, 9, 16), 0.0001, 8234.56)]


def test_gzip_csv_and_a_ragged_csv_row(tmp_path, holdout):
    bars = pl.read_parquet(holdout / "freqtrade/spot/binance_XRP_ETH_5m.parquet")
    folder = tmp_path / "ohlcv" / "binance" / "XRP_ETH"
    folder.mkdir(parents=True)
    (folder / "5m.csv.gz").write_bytes(gzip.compress(bars.write_csv().encode()))
    df = FilesSource(tmp_path).load("candles", *ALL)
    assert _span(df) == (712, datetime(2019, 10, 11), datetime(2019, 10, 13, 11, 15))
    (folder / "5m.csv.gz").write_bytes(gzip.compress(bars.write_csv().encode())[:200])
    with pytest.raises(SchemaError, match=f"{folder / '5m.csv.gz'}: unreadable gzip file"):
        FilesSource(tmp_path).provides()
    (folder / "5m.csv.gz").unlink()
    path = _candle_csv(tmp_path, "timestamp,open,high,low,close,volume\n" + GOOD + "1570752120000,1,2,0.5\n")
    with pytest.raises(SchemaError, match=f"{path}, row 3: not a CSV row of 6 fields"):
        FilesSource(tmp_path).load("candles", *ALL)


def test_freqtrade_trades_json_list_in_its_own_layout(tmp_path, holdout):
    trades = pl.read_parquet(holdout / "freqtrade/trades/binance_XRP_ETH_trades.parquet")
    folder = tmp_path / "binance"
    folder.mkdir()
    rows = [[t, i, None, s, p, a, c] for t, i, s, p, a, c in trades.rows()]
    (folder / "XRP_ETH-trades.json.gz").write_bytes(gzip.compress(json.dumps(rows).encode()))
    df = FilesSource(tmp_path).load("trades", *ALL)
    assert df.height == 12477 and df.select("venue", "symbol").unique().rows() == [("binance", "XRP/ETH")]
    assert df["trade_id"].to_list() == trades["id"].to_list()


def test_epoch_units_convert_exactly():
    from sofia_pipelines.defs.market_data.formats.timestamps import TimeParser

    def parse(values):
        return TimeParser("t.csv").parse(pl.Series("ts", values), "ts", 1).to_list()

    # the real funding time 17 ms past the boundary, in every unit and as text
    at = datetime(2021, 11, 18, 0, 0, 0, 17000)
    assert parse([1637193600.017]) == parse([1637193600017]) == parse([1637193600017000]) == [at]
    assert parse([1637193600017999999]) == parse(["1637193600017999999"]) == [at]  # ns below the ms dropped exactly
    with pytest.raises(SchemaError, match=r"t\.csv, row 2, field 'ts': time 1637193600017000 in us while"):
        parse([1637193600017, 1637193600017000])
