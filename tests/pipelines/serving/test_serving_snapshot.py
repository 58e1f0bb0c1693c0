"""The serving snapshot asset through Dagster's own materialize on a real DuckDB warehouse: CURRENT switches only
to a snapshot that validates and has something to trade; a refused one stays on disk, its blocking check says why;
empty tables some strategies need are a WARN quoting the reason their producer gave."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from sofia_pipelines.defs.serving.assets import COMPLETE, PUBLISHABLE, serving_snapshot
from sofia_pipelines.resources import warehouse_resource
from sofia_pipelines.warehouse import replace_day, replace_rows, replace_window
from sofia_runtime import paths
from sofia_runtime.schemas import FEE_TABLE, MARKETS, RAW_TABLES, RISK_LIMITS
from sofia_runtime.snapshot import current_id, load_current

DAY = "2026-11-20"
START = datetime(2026, 11, 20)


def _fill_warehouse(markets: bool = True) -> None:
    with duckdb.connect(str(paths.warehouse_path())) as conn:
        replace_rows(conn, "analytics", FEE_TABLE, pl.DataFrame([{
            "venue": "binance", "symbol": "BTC/USDT", "market": "spot", "tier": "VIP0", "min_volume_30d_usd": 0.0,
            "maker": 0.001, "taker": 0.001, "funding_interval_hours": None, "valid_from": date(2020, 1, 1),
            "valid_to": None, "source": "test", "selected": True}]))
        replace_rows(conn, "analytics", MARKETS, pl.DataFrame([{
            "venue": "binance", "symbol": "BTC/USDT", "market": "spot", "base": "BTC", "quote": "USDT",
            "price_tick": 0.01, "amount_step": 1e-5, "min_amount": 1e-5, "min_notional": 5.0}] if markets else [],
            schema=MARKETS.polars_schema))
        replace_day(conn, "analytics", RISK_LIMITS, pl.DataFrame([{
            "venue": "binance", "symbol": "BTC/USDT", "max_position": 1.0, "max_notional_usd": 10_000.0,
            "max_open_orders": 4, "daily_loss_limit_usd": 100.0}]), date(2026, 11, 20))
        replace_window(conn, "raw", RAW_TABLES["books"], pl.DataFrame({
            "venue": "binance", "symbol": "BTC/USDT", "market": "spot",
            "ts": [START + timedelta(seconds=i) for i in range(10)], "bid": 100.0, "ask": 100.1, "bid_size": 1.0,
            "ask_size": 1.0}), START, START + timedelta(days=1))


def _materialize(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize([serving_snapshot], partition_key=DAY, instance=instance,
                          resources={"warehouse": warehouse_resource()}, raise_on_error=False)


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def _metadata(result) -> dict:
    [mat] = result.get_asset_materialization_events()
    return {k: getattr(v, "value", v) for k, v in mat.materialization.metadata.items()}


def test_a_good_snapshot_is_published_and_empty_optional_tables_warn_with_their_reason(data_dir):
    instance = dg.DagsterInstance.ephemeral()
    _fill_warehouse()
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "fill_model", partition=DAY, metadata={"empty_reason": "candle-only data: no trades to fit on"}))
    result = _materialize(instance)
    assert result.success
    meta = _metadata(result)
    assert meta["published"] is True and current_id(paths.serving_dir()) == meta["snapshot_id"]
    checks = _checks(result)
    assert checks[PUBLISHABLE].passed
    assert not checks[COMPLETE].passed and checks[COMPLETE].severity == dg.AssetCheckSeverity.WARN
    warnings = checks[COMPLETE].description
    assert "fill_model is empty (candle-only data: no trades to fit on)" in warnings
    assert "route_table is empty" in warnings and "replay_trades is empty" in warnings
    assert load_current(paths.serving_dir()).tables["replay_books"].height == 10


def test_a_snapshot_with_nothing_to_trade_is_refused_and_current_keeps_the_previous_one(data_dir):
    instance = dg.DagsterInstance.ephemeral()
    _fill_warehouse()
    good = _metadata(_materialize(instance))["snapshot_id"]
    _fill_warehouse(markets=False)
    result = _materialize(instance)
    assert not result.success  # the blocking check failed the run
    checks = _checks(result)
    assert not checks[PUBLISHABLE].passed
    assert "markets is empty" in checks[PUBLISHABLE].description
    assert f"CURRENT still names {good}" in checks[PUBLISHABLE].description
    meta = _metadata(result)
    assert meta["published"] is False and meta["current"] == good
    assert current_id(paths.serving_dir()) == good
    assert (paths.serving_dir() / meta["snapshot_id"] / "manifest.json").exists()  # kept for inspection
