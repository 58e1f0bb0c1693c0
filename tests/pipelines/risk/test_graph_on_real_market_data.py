"""The decision analytics on real market data, through Dagster's own API on a real warehouse: what each computes
from candles and funding alone (no books, trades or latency probes), and from a tape of a few minutes."""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg
import duckdb
import polars as pl
import pytest

from sofia_pipelines.materialize import graph_assets
from sofia_runtime import paths
from sofia_runtime.schemas import RAW_TABLES

pytestmark = pytest.mark.slow

DAY = "2021-11-18"


def _code_location():
    from sofia_pipelines.definitions import defs
    from sofia_pipelines.resources import market_source_resource, warehouse_resource

    return dg.Definitions.merge(
        dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks),
        dg.Definitions(resources={**defs.resources, "warehouse": warehouse_resource(),
                                  "market_source": market_source_resource()}))


def _materialize(defs: dg.Definitions, partition: str, without_raw: bool = False) -> dg.ExecuteInProcessResult:
    assets, selection = graph_assets(defs)
    if without_raw:
        selection = selection - dg.AssetSelection.groups("market_data")
    return dg.materialize(assets, instance=dg.DagsterInstance.ephemeral(), partition_key=partition,
                          resources=defs.resources, selection=selection, raise_on_error=False,
                          run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}})


def _failures(result: dg.ExecuteInProcessResult) -> tuple[list[str], dict[str, str]]:
    """Failed steps with their errors, and the failed checks by name with their severity."""
    steps = [f"{e.step_key}: {e.event_specific_data.error.message.strip()[-400:]}"
             for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    checks = {c.check_name: c.severity.value for c in result.get_asset_check_evaluations() if not c.passed}
    return steps, checks


def _table(name: str, day: str | None = DAY) -> pl.DataFrame:
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        where = f" WHERE day = DATE '{day}'" if day else ""
        return conn.sql(f"SELECT * FROM analytics.{name}{where}").pl()


@pytest.fixture
def candles_and_funding(holdout, tmp_path, data_dir, monkeypatch):
    """A files folder of real Binance USD-M candles (5m and 1h) and 8-hourly funding for XRP/USDT:USDT, and
    real XRP/ETH 1m spot candles of 2019 (no day of the week analysed), linked in place."""
    ft = holdout / "freqtrade"
    files = tmp_path / "files"
    links = {"ohlcv/binance/XRP_USDT_USDT/5m.parquet": ft / "futures/binance_XRP_USDT_USDT_5m_futures.parquet",
             "ohlcv/binance/XRP_USDT_USDT/1h.parquet": ft / "futures/binance_XRP_USDT_USDT_1h_futures.parquet",
             "ohlcv/binance/XRP_ETH/1m.parquet": ft / "spot/binance_XRP_ETH_1m.parquet",
             "funding/binance/XRP_USDT.parquet": ft / "futures/binance_XRP_USDT_USDT_8h_funding_rate.parquet"}
    for rel, target in links.items():
        (files / rel).parent.mkdir(parents=True, exist_ok=True)
        (files / rel).symlink_to(target)
    monkeypatch.setenv("SOFIA_SOURCE", f"files:{files}")
    return files


def test_candles_and_funding_alone_give_every_analytic_its_method_or_its_reason(candles_and_funding):
    defs = _code_location()
    before = _materialize(defs, "2021-11-17")  # the day the fill model of DAY is judged on
    assert _failures(before)[0] == []
    result = _materialize(defs, DAY)
    steps, checks = _failures(result)
    assert steps == []
    # nothing blocks: what is missing is a WARN on the asset that could not compute it
    assert {name for name, severity in checks.items() if severity != "WARN"} == set()
    assert {"latency_heatmap_inputs_complete", "risk_backtest_inputs_complete",
            "funding_opportunities_inputs_complete"} <= set(checks)

    routes = _table("route_table")
    assert routes.filter(pl.col("symbol") == "XRP/USDT:USDT").height == 48
    assert set(routes["method"]) <= {"spread=abdi_ranaldo_2017;latency=absent",
                                     "spread=abdi_ranaldo_2017_window;latency=absent"}
    assert routes["inputs"].str.contains("not charged \\(input absent\\): latency slippage, depth impact").all()
    # the cost holds the taker fee and half the estimated spread: more than the fee alone wherever estimated
    assert (routes["best_cost_bps"] > 0).all()

    gaps = _table("analytic_gaps")
    assert gaps.filter(pl.col("asset") == "route_table").is_empty()  # every hour of the one market routed
    assert gaps.filter(pl.col("asset") == "latency_heatmap")["reason"][0].startswith("no latency probes")
    assert _table("latency_heatmap").is_empty()

    fill = _table("fill_model")
    assert fill.select("venue", "symbol").unique().rows() == [("binance", "XRP/USDT:USDT")]
    assert set(fill["method"]) == {"bar_touch_mle"}
    assert set(fill["inputs"]) == {"candles 5m + abdi_ranaldo_2017 spread"}  # the finest timeframe, not 1h
    assert (fill["intensity_a"] > 0).all() and (fill["n_obs"] > 1000).all()
    calibration = _table("fill_model_calibration")
    assert set(calibration["method"]) == {"bar_touch_mle"} and calibration["n"].sum() > 1000
    # judged on 2021-11-17, a calmer day, the proxy over-predicts fills by more than the tape's tolerance: a
    # WARN naming it, the blocking calibration check (for tape models) passes
    assert "fill_model_calibrated" not in checks and "fill_model_inputs_complete" in checks
    proxy_gap = _table("analytic_gaps").filter(pl.col("asset") == "fill_model")["reason"].to_list()
    assert len(proxy_gap) == 1 and proxy_gap[0].startswith("the bar-touch model (candles only, no tape) is off by")

    schedule = _table("session_schedule").filter(pl.col("symbol") == "XRP/USDT:USDT")
    # the candle estimate of a 5-minute bar's spread (~15 bps) is above the 10 bps cap: off, and said to rest on
    # an estimate, so the blocking check passes and its WARN companion names it
    assert schedule.height == 24 and not schedule["active"].any()
    assert schedule["reason"].str.contains("spread above cap \\(estimated from candles: no books\\)").all()
    assert "session_schedule_inputs_complete" in checks and "schedule_not_empty" not in checks
    assert schedule["inputs"].str.starts_with("rules not applied (input absent): depth (no books), latency").all()
    rankings = _table("symbol_rankings")
    assert rankings["symbol"].to_list() == ["XRP/USDT:USDT"]
    assert rankings["inputs"][0] == "left out (input absent): depth" and rankings["depth_usd"][0] is None

    funding = _table("funding_opportunities").row(0, named=True)
    assert funding["observed_interval_hours"] == 8.0 and not funding["offered"]
    assert funding["reason"].startswith("cannot price both legs, absent: spot taker fee, spot spread")
    assert funding["method"] == "spread=perp:abdi_ranaldo_2017,spot:absent;basis=absent"

    # targets and transfers only where the day has data: binance's XRP and USDT
    targets = _table("inventory_targets")
    assert targets.select("venue", "asset").sort("asset").rows() == [("binance", "USDT"), ("binance", "XRP")]
    plan = _table("rebalance_plan")
    assert plan.filter(pl.col("status") == "planned").is_empty()

    assert _table("risk_backtest_pnl").is_empty()
    not_replayed = gaps.filter(pl.col("asset") == "risk_backtest")
    assert sorted(not_replayed["symbol"]) == ["funding_farmer", "mm_lite"]
    assert not_replayed["reason"].str.contains("no books or quotes for the day").all()


def _minutes_of_binance_tape(holdout) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Binance spot BTC/USDT best bid/ask and trades of 2021-01-08 00:00 (NautilusTrader's test data), as raw rows."""
    n = holdout / "nautilus"
    quotes = pl.read_parquet(n / "binance__btcusdt-quotes.parquet")
    books = quotes.select(pl.lit("binance").alias("venue"), "symbol", pl.lit("spot").alias("market"),
                          pl.col("timestamp").dt.replace_time_zone(None).alias("ts"), "bid", "ask", "bid_size",
                          "ask_size").unique(["ts"], keep="last", maintain_order=True)
    tape = pl.read_parquet(n / "binance__btcusdt-trades.parquet")
    trades = tape.select(
        pl.lit("binance").alias("venue"), pl.lit("BTC/USDT").alias("symbol"), pl.lit("spot").alias("market"),
        pl.col("timestamp").dt.replace_time_zone(None).alias("ts"), pl.col("trade_id").cast(pl.Utf8),
        pl.when(pl.col("buyer_maker") == "True").then(pl.lit("sell")).otherwise(pl.lit("buy")).alias("side"),
        "price", pl.col("quantity").alias("amount"))
    return RAW_TABLES["books"].conform(books, "quotes"), RAW_TABLES["trades"].conform(trades, "trades")


def test_a_tape_of_a_minute_is_fitted_and_replayed(holdout, data_dir):
    from sofia_pipelines.warehouse import replace_window

    books, trades = _minutes_of_binance_tape(holdout)
    window = datetime(2021, 1, 8), datetime(2021, 1, 9)
    with duckdb.connect(str(paths.warehouse_path())) as conn:
        for table, df in (("books", books), ("trades", trades)):
            replace_window(conn, "raw", RAW_TABLES[table], df, *window)
        for table in ("candles", "funding", "latency", "fx"):
            replace_window(conn, "raw", RAW_TABLES[table], RAW_TABLES[table].empty(), *window)
    result = _materialize(_code_location(), "2021-01-08", without_raw=True)
    steps, checks = _failures(result)
    assert steps == []
    assert {name for name, severity in checks.items() if severity != "WARN"} == set()

    fill = _table("fill_model", "2021-01-08")
    assert set(fill["method"]) == {"tape_mle"} and set(fill["side"]) == {"buy", "sell"}
    calibration = _table("fill_model_calibration", "2021-01-08")
    assert calibration["n"].sum() > 0  # odd 10-second sample times held out: the tape is within one minute

    routes = _table("route_table", "2021-01-08")
    assert routes.filter(pl.col("hour") == 0)["method"].to_list() == ["spread=books;latency=absent"] * 2

    pnl = _table("risk_backtest_pnl", "2021-01-08")
    assert set(pnl["strategy"]) == {"mm_lite", "funding_farmer", "book"}
    assert (pnl.filter(pl.col("strategy") != "book")["events"] == books.height + trades.height).all()
    # the hour's volume comes from its trades (no candles): the hour is active and mm_lite quotes BTC/USDT on it
    schedule = _table("session_schedule", "2021-01-08")
    assert schedule.select("hour", "active", "method").rows() == [(0, True, "spread=books;latency=absent")]
    assert pnl.filter(pl.col("strategy") == "mm_lite")["instruments"].to_list() == [1]
    gaps = _table("analytic_gaps", "2021-01-08")
    assert gaps.filter(pl.col("asset") == "session_schedule").is_empty()
    idle = gaps.filter(pl.col("asset") == "risk_backtest")
    assert idle["symbol"].to_list() == ["funding_farmer"]  # no funding rates: nothing offered to carry
    assert idle["reason"].str.contains("no instrument to trade").all()
    assert date(2021, 1, 8) in set(gaps["day"])
