"""The files source on real held-out candles and funding rates, valid and broken, through the raw assets."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from sofia_pipelines.defs.market_data import assets
from sofia_pipelines.defs.market_data.files import FilesSource
from sofia_pipelines.defs.market_data.sources import source_from_spec
from sofia_pipelines.resources import MarketSourceResource
from sofia_runtime import paths
from sofia_runtime.schemas import SchemaError

# four hours of Binance XRP/ETH 1m candles and the XRP/USDT:USDT funding rates, from the held-out data
CANDLE_FILE, FIRST_BAR, BARS = "freqtrade/spot/binance_XRP_ETH_1m.parquet", 1570917600000, 240
FUNDING_FILE = "freqtrade/futures/binance_XRP_USDT_USDT_8h_funding_rate.parquet"
CANDLES = Path("ohlcv/binance/XRP_ETH/1m.parquet")
RAW = [assets.raw_candles, assets.raw_books, assets.raw_trades, assets.raw_funding, assets.raw_latency,
       assets.raw_fx]


@pytest.fixture
def files_dir(tmp_path, holdout) -> Path:
    """The files layout over real held-out data: the funding file linked in place, a four-hour slice of the
    candles written (the tests then damage or convert that copy)."""
    d = tmp_path / "market"
    (d / CANDLES).parent.mkdir(parents=True)
    bars = pl.read_parquet(holdout / CANDLE_FILE)
    bars.filter(pl.col("timestamp") >= FIRST_BAR).head(BARS).write_parquet(d / CANDLES)
    (d / "funding" / "binance").mkdir(parents=True)
    (d / "funding" / "binance" / "XRP_USDT.parquet").symlink_to(holdout / FUNDING_FILE)
    return d


def _candles(files_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(files_dir / CANDLES)


def _write_csv(files_dir: Path, df: pl.DataFrame) -> Path:
    (files_dir / CANDLES).unlink()
    path = files_dir / CANDLES.with_suffix(".csv")
    df.write_csv(path)
    return path


def test_valid_parquet_csv_and_ccxt_json_read_the_same(files_dir):
    src = source_from_spec(f"files:{files_dir}")
    assert src.provides() == {"candles", "funding"}
    # the days of every table's files: the candles' two and the funding rates' 2021-11-18 … 2021-12-18
    days = src.available_days()
    assert days[:2] == [date(2019, 10, 12), date(2019, 10, 13)]
    assert days[2] == date(2021, 11, 18) and days[-1] == date(2021, 12, 18) and len(days) == 2 + 31
    window = (datetime(2019, 10, 12), datetime(2019, 10, 14))
    from_parquet = src.load("candles", *window)
    assert from_parquet.height == 240
    assert from_parquet["symbol"].unique().to_list() == ["XRP/ETH"]
    assert from_parquet["market"].unique().to_list() == ["spot"]

    df = _candles(files_dir)
    iso = df.with_columns(pl.from_epoch("timestamp", time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("date"))
    _write_csv(files_dir, iso.drop("timestamp").select("date", "open", "high", "low", "close", "volume"))
    assert FilesSource(files_dir).load("candles", *window).equals(from_parquet)

    (files_dir / CANDLES.with_suffix(".csv")).unlink()
    (files_dir / CANDLES.with_suffix(".json")).write_text(json.dumps(df.rows()))
    assert FilesSource(files_dir).load("candles", *window).equals(from_parquet)

    funding = src.load("funding", datetime(2021, 1, 1), datetime(2022, 1, 1))
    assert funding.height == 91
    assert funding["symbol"].unique().to_list() == ["XRP/USDT:USDT"]
    # the real file's timestamps are up to 17 ms off the 8-hour boundary; they are kept as they are
    assert (funding["ts"].dt.millisecond() > 0).any()


def test_funding_venue_is_the_venue_folder_and_candles_of_every_timeframe_are_kept(files_dir):
    # the funding file sits at funding/binance/XRP_USDT.parquet: its venue is binance, not "funding"
    src = FilesSource(files_dir)
    funding = src.load("funding", datetime(2021, 1, 1), datetime(2022, 1, 1))
    assert funding["venue"].unique().to_list() == ["binance"]
    # 5-minute bars beside the 1-minute ones are loaded and kept apart by their timeframe, not skipped
    bars = _candles(files_dir)
    five = bars.group_by_dynamic(pl.from_epoch("timestamp", time_unit="ms").alias("t"), every="5m").agg(
        pl.col("timestamp").first(), pl.col("open").first(), pl.col("high").max(), pl.col("low").min(),
        pl.col("close").last(), pl.col("volume").sum()).drop("t")
    five.write_parquet(files_dir / CANDLES.with_name("5m.parquet"))
    df = FilesSource(files_dir).load("candles", datetime(2019, 10, 12), datetime(2019, 10, 14))
    assert df.group_by("timeframe").len().sort("timeframe").rows() == [("1m", 240), ("5m", 48)]
    assert df.filter(pl.col("timeframe") == "5m")["volume"].sum() == pytest.approx(bars["volume"].sum())


def test_epoch_seconds_are_not_read_as_milliseconds(files_dir):
    bars = _candles(files_dir)
    _write_csv(files_dir, bars.with_columns(pl.col("timestamp") // 1000))
    df = FilesSource(files_dir).load("candles", datetime(2019, 10, 12), datetime(2019, 10, 14))
    assert df["ts"].to_list() == pl.from_epoch(bars["timestamp"], time_unit="ms").to_list()


@pytest.mark.parametrize("breakage, row, field", [
    ("nan_price", 7, "close"),
    ("duplicate_row", 11, "ts"),
    ("bad_date", 4, "date"),
    ("missing_column", None, "volume"),
    ("out_of_order", 21, "ts"),
])
def test_broken_file_names_file_row_and_field(files_dir, breakage, row, field):
    df = _candles(files_dir).with_columns(pl.from_epoch("timestamp", time_unit="ms")
                                          .dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("date")).drop("timestamp")
    df = df.select("date", "open", "high", "low", "close", "volume").with_columns(pl.all().cast(pl.Utf8))
    if breakage == "nan_price":
        df = df.with_columns(pl.when(pl.int_range(pl.len()) == 6).then(pl.lit("NaN")).otherwise("close").alias("close"))
    elif breakage == "duplicate_row":
        df = pl.concat([df.head(10), df[9], df.tail(df.height - 10)])
    elif breakage == "bad_date":
        df = df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("13/10/2019 25:61")).otherwise("date")
                             .alias("date"))
    elif breakage == "missing_column":
        df = df.drop("volume")
    elif breakage == "out_of_order":
        df = pl.concat([df.head(19), df[20], df[19], df.tail(df.height - 21)])
    path = _write_csv(files_dir, df)
    with pytest.raises(SchemaError) as err:
        FilesSource(files_dir).load("candles", datetime(2019, 10, 12), datetime(2019, 10, 14))
    message = str(err.value)
    assert str(path) in message
    assert f"field '{field}'" in message
    if row is not None:
        assert f"row {row}," in message


def _materialize(files_dir: Path, partition: str, raise_on_error=True):
    resources = {"warehouse": __import__("sofia_pipelines.resources", fromlist=["x"]).warehouse_resource(),
                 "market_source": MarketSourceResource(spec=f"files:{files_dir}")}
    return dg.materialize(RAW, resources=resources, partition_key=partition, raise_on_error=raise_on_error)


def _rows(sql: str):
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def test_partition_replace_and_failed_run_keeps_stored_rows(data_dir, files_dir):
    (files_dir / "README.md").write_text("Binance XRP/ETH 1m, Oct 2019; XRP/USDT:USDT funding")
    _materialize(files_dir, "2019-10-12")
    result = _materialize(files_dir, "2019-10-13")
    books = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(["raw", "books"])]
    assert "has no books" in books[0].event_specific_data.materialization.metadata["note"].value
    assert "- `README.md`: documentation or hidden file" in \
        books[0].event_specific_data.materialization.metadata["ignored_files"].value
    funding = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(["raw", "funding"])]
    assert funding[0].event_specific_data.materialization.metadata["note"].value.endswith(
        "has funding, but no rows on 2019-10-13")
    before = _rows("SELECT CAST(ts AS DATE) AS d, count(*), sum(close) FROM raw.candles GROUP BY d ORDER BY d")
    assert [r[1] for r in before] == [120, 120]

    # the day's source data changes: re-materializing that day replaces exactly its rows
    df = _candles(files_dir)
    changed = df.filter(pl.col("timestamp") < 1570924800000 + 30 * 60_000)  # day 13 keeps its first 30 minutes
    changed = changed.with_columns(pl.col("close") * 1.0)
    changed.write_parquet(files_dir / CANDLES)
    _materialize(files_dir, "2019-10-13")
    after = _rows("SELECT CAST(ts AS DATE) AS d, count(*), sum(close) FROM raw.candles GROUP BY d ORDER BY d")
    assert after[0] == before[0]
    assert after[1][1] == 30

    # a broken file fails the run and leaves both days exactly as stored
    broken = changed.with_columns(pl.when(pl.int_range(pl.len()) == 125).then(float("nan")).otherwise("open")
                                  .alias("open"))
    broken.write_parquet(files_dir / CANDLES)
    failed = _materialize(files_dir, "2019-10-13", raise_on_error=False)
    assert not failed.success
    assert _rows("SELECT CAST(ts AS DATE) AS d, count(*), sum(close) FROM raw.candles GROUP BY d ORDER BY d") == after


def test_wrong_source_spec_is_refused():
    with pytest.raises(ValueError, match="SOFIA_SOURCE='kraken'"):
        source_from_spec("kraken")


def test_real_futures_files_through_the_raw_assets_and_their_checks(data_dir, tmp_path, holdout):
    from sofia_pipelines.defs.market_data.checks import raw_checks

    market = tmp_path / "futures"
    market.mkdir()
    for name in ("1h_futures", "5m_futures", "1h_mark", "8h_funding_rate"):
        (market / f"binance_XRP_USDT_USDT_{name}.parquet").symlink_to(
            holdout / f"freqtrade/futures/binance_XRP_USDT_USDT_{name}.parquet")
    resources = {"warehouse": __import__("sofia_pipelines.resources", fromlist=["x"]).warehouse_resource(),
                 "market_source": MarketSourceResource(spec=f"files:{market}")}
    checks = [c for c in raw_checks if next(iter(c.check_keys)).asset_key.path[-1] in ("candles", "funding")]
    result = dg.materialize([assets.raw_candles, assets.raw_funding, *checks], resources=resources,
                            partition_key="2021-11-18")
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 2 and all(c.passed for c in checks)
    assert _rows("SELECT timeframe, count(*) FROM raw.candles GROUP BY ALL ORDER BY 1") == [("1h", 24), ("5m", 288)]
    assert _rows("SELECT venue, symbol, count(*) FROM raw.funding GROUP BY ALL") == [("binance", "XRP/USDT:USDT", 3)]
    candles = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(["raw", "candles"])]
    assert "binance_XRP_USDT_USDT_1h_mark.parquet`: mark-price candles" in \
        candles[0].event_specific_data.materialization.metadata["ignored_files"].value
