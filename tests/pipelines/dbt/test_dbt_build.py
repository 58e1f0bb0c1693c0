"""dbt build inside a Dagster materialization: raw -> staging -> marts, with dbt tests as asset checks."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster_dbt import DbtCliResource

from sofia_pipelines.defs.dbt.assets import defs as dbt_defs
from sofia_runtime.simulator import MarketSimulator
from sofia_pipelines.partitions import partition_window
from sofia_pipelines.warehouse import replace_window
from sofia_runtime import paths
from sofia_runtime.schemas import RAW_TABLES

DAY = "2026-10-28"
START, END = partition_window(DAY)
REPO = Path(__file__).resolve().parents[3]


def _write_raw(tables: dict[str, pl.DataFrame]) -> None:
    with duckdb.connect(str(paths.warehouse_path())) as conn:
        for name, df in tables.items():
            replace_window(conn, "raw", RAW_TABLES[name], df, START, END)


def _small_day() -> dict[str, pl.DataFrame]:
    """Two hours of BTC/USDT on binance and BTC/TRY on btcturk from the simulator."""
    day = MarketSimulator().day(START.date())
    keep = (pl.col("ts") < START.replace(hour=2))
    out = {}
    for name, df in day.items():
        df = df.filter(keep)
        if "symbol" in df.columns and name != "funding":
            df = df.filter(pl.col("symbol").is_in(["BTC/USDT", "BTC/TRY"]) & pl.col("venue").is_in(["binance", "btcturk"]))
        out[name] = df
    return out


def _materialize(resources):
    return dg.materialize(list(dbt_defs.assets), resources={**resources, **dbt_defs.resources},
                          partition_key=DAY, raise_on_error=False)


@pytest.mark.slow
def test_marts_match_hand_computation_and_tests_pass(data_dir, resources):
    raw = _small_day()
    _write_raw(raw)
    result = _materialize(resources)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) >= 10 and all(c.passed for c in checks)

    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        mart = conn.sql("SELECT * FROM marts.mart_hourly_liquidity ORDER BY venue, hour").pl()
        latency = conn.sql("SELECT * FROM marts.mart_hourly_latency ORDER BY venue, endpoint, hour").pl()
    assert mart.height == 4  # 2 instruments x 2 hours

    books = raw["books"].filter((pl.col("venue") == "binance") & (pl.col("ts") < START.replace(hour=1)))
    mids = (books["bid"] + books["ask"]) / 2
    expected_spread = (((books["ask"] - books["bid"]) / mids) * 1e4).mean()
    row = mart.filter((pl.col("venue") == "binance") & (pl.col("hour") == START))
    assert row["spread_bps_mean"][0] == pytest.approx(expected_spread)
    assert row["n_books"][0] == books.height
    candles = raw["candles"].filter((pl.col("venue") == "binance") & (pl.col("ts") < START.replace(hour=1)))
    assert row["volume_usd"][0] == pytest.approx((candles["volume"] * candles["close"]).sum())

    fx = raw["fx"].filter(pl.col("ts") < START.replace(hour=1))["rate"].mean()
    try_candles = raw["candles"].filter((pl.col("venue") == "btcturk") & (pl.col("ts") < START.replace(hour=1)))
    try_row = mart.filter((pl.col("venue") == "btcturk") & (pl.col("hour") == START))
    assert try_row["volume_usd"][0] == pytest.approx((try_candles["volume"] * try_candles["close"]).sum() / fx)

    probes = raw["latency"].filter((pl.col("venue") == "binance") & (pl.col("endpoint") == "public_rest")
                                   & (pl.col("ts") < START.replace(hour=1)))
    lat = latency.filter((pl.col("venue") == "binance") & (pl.col("endpoint") == "public_rest") & (pl.col("hour") == START))
    assert lat["samples"][0] == probes.height
    assert lat["error_rate"][0] == pytest.approx((~probes["ok"]).sum() / probes.height)
    assert lat["p50_ms"][0] == pytest.approx(probes.filter(pl.col("ok"))["latency_ms"].median())

    # re-running the partition replaces its hours instead of adding to them
    _materialize(resources)
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        assert conn.sql("SELECT count(*) FROM marts.mart_hourly_liquidity").fetchall()[0][0] == 4


@pytest.mark.slow
def test_failing_dbt_test_shows_as_failed_check(data_dir, resources):
    raw = _small_day()
    # a crossed book passes no sanity test: spread_bps comes out negative
    raw["books"] = raw["books"].with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.col("bid") * 0.5)
                                             .otherwise(pl.col("ask")).alias("ask"))
    _write_raw(raw)
    result = _materialize(resources)
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert any("spread_bps" in c.check_name and c.asset_key.path[-1] == "stg_books" for c in failed)


def test_dbt_resource_knows_its_version_without_running_dbt():
    # SofiaDbtCliResource replaces these DbtCliResource internals: a dagster-dbt that renames them must fail here
    assert "_cli_version" in vars(DbtCliResource) and "_initialize_dbt_core_adapter" in vars(DbtCliResource)
    from dbt.version import __version__ as dbt_core

    dbt = dbt_defs.resources["dbt"]
    # the venv's executable, so the dbt-core this process imports (`dbt --version` would ask PyPI for the latest)
    assert Path(dbt.dbt_executable) == Path(sys.executable).with_name("dbt")
    assert str(dbt._cli_version) == dbt_core
    assert dbt._initialize_dbt_core_adapter(["build"]) is None


def test_definitions_validate_on_the_workspace():
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "DAGSTER_HOME": ""}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _resample(df: pl.DataFrame, every: str) -> pl.DataFrame:
    return (df.sort("ts").group_by_dynamic("ts", every=every, group_by=["venue", "symbol", "market"])
            .agg(pl.col("open").first(), pl.col("high").max(), pl.col("low").min(), pl.col("close").last(),
                 pl.col("volume").sum())
            .with_columns(pl.lit(every).alias("timeframe")))


@pytest.mark.slow
def test_mart_takes_the_finest_timeframe_per_hour_and_states_volatility_per_minute(data_dir, resources):
    raw = _small_day()
    one_minute = raw["candles"]
    binance = one_minute.filter(pl.col("venue") == "binance")
    btcturk = one_minute.filter(pl.col("venue") == "btcturk")
    # binance: 1m and 5m bars of the same two hours, plus an 8h bar; btcturk: 1m in hour 0, only 5m in hour 1
    btcturk_5m = _resample(btcturk.filter(pl.col("ts") >= START.replace(hour=1)), "5m")
    raw["candles"] = pl.concat([RAW_TABLES["candles"].conform(df, "test") for df in (
        binance, _resample(binance, "5m"), _resample(binance, "8h"),
        btcturk.filter(pl.col("ts") < START.replace(hour=1)), btcturk_5m)])
    _write_raw(raw)
    result = _materialize(resources)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        mart = conn.sql("SELECT venue, hour, candle_timeframe, volume_base, volatility_1m "
                        "FROM marts.mart_hourly_liquidity ORDER BY venue, hour").pl()
    assert mart.select("venue", "candle_timeframe").rows() == [("binance", "1m"), ("binance", "1m"),
                                                               ("btcturk", "1m"), ("btcturk", "5m")]
    # the coarser bars of the same hours are not counted again
    assert mart["volume_base"][0] == pytest.approx(binance.filter(pl.col("ts") < START.replace(hour=1))["volume"].sum())
    # hour 1 of btcturk from 5m bars: log returns per bar (the first against hour 0's last 1m close) x sqrt(60/300)
    closes = [btcturk.filter(pl.col("ts") < START.replace(hour=1)).sort("ts")["close"][-1],
              *btcturk_5m.sort("ts")["close"].to_list()]
    returns = pl.Series(closes).log().diff().drop_nulls()
    assert mart["volatility_1m"][3] == pytest.approx(returns.std() * (60 / 300) ** 0.5)
    assert mart["volume_base"][3] == pytest.approx(btcturk_5m["volume"].sum())
