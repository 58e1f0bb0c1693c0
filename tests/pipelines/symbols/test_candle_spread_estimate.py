"""The spread estimated from candles (Abdi-Ranaldo) and the tape's latency, where books and probes are absent."""

from datetime import datetime, timedelta

import duckdb
import numpy as np
import polars as pl
import pytest

from sofia_pipelines.market_inputs import (ABDI_RANALDO, candle_spread_abdi_ranaldo, finest_candles,
                                           tape_latency_samples, with_spread)
from sofia_pipelines.warehouse import replace_window
from sofia_runtime.schemas import RAW_TABLES

T0 = datetime(2026, 10, 26)


def _bars_of_a_bouncing_tape(spread: float, minutes: int, seed: int = 7) -> pl.DataFrame:
    """1-minute bars of trades printing at mid * (1 +- spread / 2) around a random-walk mid, one trade a second."""
    rng = np.random.default_rng(seed)
    seconds = minutes * 60
    mid = 100 * np.exp(np.cumsum(rng.normal(0, 2e-5, seconds)))
    price = mid * (1 + rng.choice([-0.5, 0.5], seconds) * spread)
    ts = [T0 + timedelta(seconds=i) for i in range(seconds)]
    tape = pl.DataFrame({"ts": ts, "price": price})
    bars = tape.group_by_dynamic("ts", every="1m").agg(
        pl.col("price").first().alias("open"), pl.col("price").max().alias("high"),
        pl.col("price").min().alias("low"), pl.col("price").last().alias("close"),
        pl.len().cast(pl.Float64).alias("volume"))
    return bars.with_columns(pl.lit("v").alias("venue"), pl.lit("X/USDT").alias("symbol"),
                             pl.lit("spot").alias("market"), pl.lit("1m").alias("timeframe"))


def test_abdi_ranaldo_recovers_the_spread_of_a_bouncing_tape():
    bars = _bars_of_a_bouncing_tape(spread=0.001, minutes=6 * 60)
    window = candle_spread_abdi_ranaldo(bars, every=None)
    assert window["spread_bps"][0] == pytest.approx(10.0, rel=0.25)
    hourly = candle_spread_abdi_ranaldo(bars)
    assert hourly.height == 6 and hourly["bars"].to_list() == [60] * 5 + [59]  # the last bar has no successor
    assert hourly["spread_bps"].mean() == pytest.approx(10.0, rel=0.3)


def test_zero_volume_bars_and_coarser_timeframes_are_left_out():
    bars = _bars_of_a_bouncing_tape(spread=0.002, minutes=120)
    flat = bars.head(30).with_columns(pl.col("close").alias("open"), pl.col("close").alias("high"),
                                      pl.col("close").alias("low"), pl.lit(0.0).alias("volume"))
    hourly_bars = bars.group_by_dynamic("ts", every="1h").agg(
        pl.col("open").first(), pl.col("high").max(), pl.col("low").min(), pl.col("close").last(),
        pl.col("volume").sum(), pl.col("venue").first(), pl.col("symbol").first(), pl.col("market").first()
    ).with_columns(pl.lit("1h").alias("timeframe"))
    mixed = pl.concat([flat, bars.slice(30), hourly_bars], how="diagonal")
    assert set(finest_candles(mixed)["timeframe"]) == {"1m"}
    estimate = candle_spread_abdi_ranaldo(mixed, every=None)
    assert estimate["bars"][0] == 89  # the 90 traded 1-minute bars' adjacent pairs; no flat bar, no hourly bar
    assert estimate["spread_bps"][0] == pytest.approx(20.0, rel=0.3)


def test_books_spread_first_then_the_hours_estimate_then_the_windows():
    bars = _bars_of_a_bouncing_tape(spread=0.001, minutes=180)
    hours = [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(hours=5)]
    liquidity = pl.DataFrame({"venue": "v", "symbol": "X/USDT", "hour": hours,
                              "spread_bps_mean": [3.0, None, None, None]})
    out = with_spread(liquidity, bars).sort("hour")
    assert out["spread_method"].to_list() == ["books", ABDI_RANALDO, ABDI_RANALDO, f"{ABDI_RANALDO}_window"]
    assert out["spread_bps"][0] == 3.0 and out["spread_bps"][1] == pytest.approx(10.0, rel=0.4)
    assert with_spread(liquidity.with_columns(pl.lit("w").alias("venue")), bars)["spread_method"].to_list()[1:] == \
        ["absent"] * 3


def test_tape_latency_is_local_minus_exchange_time_where_both_exist(tmp_path):
    trades = pl.DataFrame({"venue": ["v"] * 3, "symbol": ["X/USDT"] * 3, "market": ["spot"] * 3,
                           "ts": [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)],
                           "trade_id": ["1", "2", "3"], "side": ["buy", "sell", "buy"], "price": [1.0] * 3,
                           "amount": [1.0] * 3,
                           "local_ts": [T0 + timedelta(milliseconds=40), None,
                                        T0 + timedelta(seconds=2, milliseconds=5)]})
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        assert tape_latency_samples(conn, T0, T0 + timedelta(days=1)).is_empty()  # no raw tables yet
        replace_window(conn, "raw", RAW_TABLES["trades"], trades, T0, T0 + timedelta(days=1))
        samples = tape_latency_samples(conn, T0, T0 + timedelta(days=1))
    assert samples.sort("ts")["latency_ms"].to_list() == [40.0, 5.0]
    assert set(samples["endpoint"]) == {"websocket"} and samples["ok"].all()
