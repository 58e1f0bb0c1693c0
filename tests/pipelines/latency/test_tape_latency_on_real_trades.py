"""Without latency probes, the heatmap is the tape's delay: Tardis.dev BitMEX trades with their receive times."""

from datetime import datetime

import dagster as dg
import duckdb
import polars as pl
import pytest

from sofia_pipelines.defs.latency.assets import latency_heatmap_asset, latency_heatmap_inputs_complete
from sofia_pipelines.defs.latency.checks import heatmap_complete
from sofia_pipelines.warehouse import replace_window
from sofia_runtime import paths
from sofia_runtime.schemas import RAW_TABLES


def test_heatmap_from_local_minus_exchange_time_of_real_trades(holdout, resources):
    raw = pl.read_csv(holdout / "nautilus" / "tardis__bitmex_trades_XBTUSD.csv")
    trades = raw.select(pl.col("exchange").alias("venue"), pl.lit("BTC/USD:BTC").alias("symbol"),
                        pl.lit("perp").alias("market"),
                        pl.from_epoch("timestamp", time_unit="us").cast(pl.Datetime("ms")).alias("ts"),
                        pl.col("id").alias("trade_id"), "side", "price", "amount",
                        pl.from_epoch("local_timestamp", time_unit="us").cast(pl.Datetime("ms")).alias("local_ts"))
    day = trades["ts"].min().date()
    window = datetime.combine(day, datetime.min.time()), datetime.combine(day, datetime.max.time())
    with duckdb.connect(str(paths.warehouse_path())) as conn:
        replace_window(conn, "raw", RAW_TABLES["trades"], trades, *window)
    result = dg.materialize([latency_heatmap_asset, latency_heatmap_inputs_complete, heatmap_complete],
                            partition_key=day.isoformat(), resources=resources)
    assert all(c.passed for c in result.get_asset_check_evaluations())
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        heatmap = conn.sql("SELECT * FROM analytics.latency_heatmap WHERE view = 'hour_of_day'").pl()
    delays = ((trades["local_ts"] - trades["ts"]).dt.total_milliseconds()).cast(pl.Float64)
    row = heatmap.row(0, named=True)
    assert heatmap.height == 1 and (row["venue"], row["endpoint"]) == ("bitmex", "websocket")
    assert row["method"] == "tape_local_minus_exchange_ts" and row["samples"] == trades.height == 10
    assert row["p50_ms"] == pytest.approx(delays.quantile(0.5, "linear"))
