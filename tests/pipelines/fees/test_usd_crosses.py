"""USD values of pairs quoted in neither USD nor TRY, through a cross in the same hour's data, in a dbt run on a
real DuckDB file: Binance's real XRP/ETH tape of 2019-10-11, priced through ETH/USDT of the same hours."""

from datetime import date, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from sofia_pipelines.defs.dbt.assets import defs as dbt_defs
from sofia_pipelines.partitions import partition_window
from sofia_pipelines.warehouse import replace_window
from sofia_runtime import paths
from sofia_runtime.schemas import RAW_TABLES
from sofia_runtime.simulator import MarketSimulator

pytestmark = pytest.mark.slow

DAY = "2019-10-11"
START, END = partition_window(DAY)


def _hour(h: int):
    return START + timedelta(hours=h)


def _raw(holdout) -> dict[str, pl.DataFrame]:
    xrp_eth = (pl.read_parquet(holdout / "freqtrade" / "spot" / "binance_XRP_ETH_1m.parquet")
               .with_columns(pl.col("timestamp").cast(pl.Datetime("ms")).alias("ts"))
               .filter(pl.col("ts") < _hour(8))
               .with_columns(venue=pl.lit("binance"), symbol=pl.lit("XRP/ETH"), market=pl.lit("spot"),
                             timeframe=pl.lit("1m")))
    # ETH/USDT of the same day (the holdout has none from 2019): books and candles for hours 0-2, candles only
    # for 3-5; for hour 6 only the inverse pair USDT/ETH on another venue; nothing for hour 7
    eth = MarketSimulator(end=date(2019, 10, 12), days=1, bases=("ETH",), venues=("binance",)).day(START.date())
    eth_books = eth["books"].filter((pl.col("symbol") == "ETH/USDT") & (pl.col("ts") < _hour(3)))
    eth_candles = eth["candles"].filter((pl.col("symbol") == "ETH/USDT") & (pl.col("ts") < _hour(6)))
    usdt_eth = (eth["candles"].filter((pl.col("symbol") == "ETH/USDT") & pl.col("ts").is_between(_hour(6), _hour(7),
                                                                                                    closed="left"))
                .with_columns(venue=pl.lit("kraken"), symbol=pl.lit("USDT/ETH"), open=1 / pl.col("open"),
                              high=1 / pl.col("low"), low=1 / pl.col("high"), close=1 / pl.col("close")))
    candles = pl.concat([RAW_TABLES["candles"].conform(df, "test") for df in (xrp_eth, eth_candles, usdt_eth)])
    return {"candles": candles, "books": eth_books, "trades": RAW_TABLES["trades"].empty(),
            "funding": RAW_TABLES["funding"].empty(), "latency": eth["latency"], "fx": RAW_TABLES["fx"].empty()}


def test_eth_quoted_pair_gets_usd_values_through_eth_usdt(data_dir, resources, holdout):
    raw = _raw(holdout)
    with duckdb.connect(str(paths.warehouse_path())) as conn:
        for name, df in raw.items():
            replace_window(conn, "raw", RAW_TABLES[name], df, START, END)
    result = dg.materialize(list(dbt_defs.assets), resources={**resources, **dbt_defs.resources},
                            partition_key=DAY, raise_on_error=False)
    assert result.success
    failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    assert failed == []
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        mart = conn.sql("SELECT * FROM marts.mart_hourly_liquidity WHERE symbol = 'XRP/ETH' ORDER BY hour").pl()
    assert mart.height == 8

    xrp = raw["candles"].filter(pl.col("symbol") == "XRP/ETH")
    books = raw["books"].with_columns(((pl.col("bid") + pl.col("ask")) / 2).alias("mid"))
    eth = raw["candles"].filter(pl.col("symbol") == "ETH/USDT")
    inverse = raw["candles"].filter(pl.col("symbol") == "USDT/ETH")
    for h, row in enumerate(mart.iter_rows(named=True)):
        in_hour = pl.col("ts").is_between(_hour(h), _hour(h + 1), closed="left")
        volume_eth = xrp.filter(in_hour).select((pl.col("volume") * pl.col("close")).sum()).item()
        if h < 3:
            usd_per_eth, method = books.filter(in_hour)["mid"].mean(), "cross ETH/USDT"
        elif h < 6:
            usd_per_eth, method = eth.filter(in_hour).sort("ts")["close"][-1], "cross ETH/USDT"
        elif h == 6:
            usd_per_eth, method = 1 / inverse.filter(in_hour).sort("ts")["close"][-1], "cross USDT/ETH"
        else:
            assert row["usd_method"] == "no cross for ETH in the data"
            assert row["quote_per_usd"] is None and row["volume_usd"] is None
            continue
        assert row["usd_method"] == method, h
        assert row["quote_per_usd"] == pytest.approx(1 / usd_per_eth)
        assert row["volume_usd"] == pytest.approx(volume_eth * usd_per_eth)

    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        methods = dict(conn.sql("SELECT DISTINCT symbol, usd_method FROM marts.mart_hourly_liquidity "
                                "WHERE symbol IN ('ETH/USDT', 'USDT/ETH')").fetchall())
    assert methods == {"ETH/USDT": "par", "USDT/ETH": "cross USDT/ETH"}  # quoted in ETH, priced through itself
