"""The embedded market must look like a market: stylized facts checked on what it generates."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pytest
from scipy import stats

from sofia_runtime.simulator import MarketSimulator, stream_to_parquet
from sofia_runtime.schemas import RAW_TABLES


@pytest.fixture(scope="module")
def sim():
    return MarketSimulator()


@pytest.fixture(scope="module")
def week(sim):
    start = datetime.combine(sim.available_days()[0], datetime.min.time())
    end = datetime.combine(sim.end, datetime.min.time())
    return {t: sim.load(t, start, end) for t in ("candles", "books", "latency", "funding", "fx")}


def _returns(candles: pl.DataFrame, venue="binance", symbol="BTC/USDT") -> np.ndarray:
    close = candles.filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol)).sort("ts")["close"].to_numpy()
    return np.diff(np.log(close))


def test_default_span_and_schemas(sim, week):
    assert [d.isoformat() for d in sim.available_days()] == [f"2026-10-{d}" for d in range(25, 32)]
    day = sim.day(sim.available_days()[0])
    for name, schema in RAW_TABLES.items():
        assert day[name].schema == schema.polars_schema, name
        assert day[name].height > 0, name
    assert set(day["candles"]["venue"].unique()) == {"binance", "okx", "bybit", "btcturk"}
    assert set(day["candles"].filter(pl.col("venue") == "btcturk")["symbol"].unique()) == {"BTC/TRY", "ETH/TRY"}
    assert (day["books"]["bid"] < day["books"]["ask"]).all()


def test_deterministic_from_seed():
    a, b, c = MarketSimulator(seed=3, days=2), MarketSimulator(seed=3, days=2), MarketSimulator(seed=4, days=2)
    d = a.available_days()[1]
    for t in RAW_TABLES:
        assert a.day(d)[t].equals(b.day(d)[t]), t
    assert not a.day(d)["candles"].equals(c.day(d)["candles"])


def test_fat_tails(week):
    assert stats.kurtosis(_returns(week["candles"])) > 1.0


def test_volatility_clustering(week):
    r = np.abs(_returns(week["candles"]))
    r = r - r.mean()
    acf = [np.corrcoef(r[:-k], r[k:])[0, 1] for k in range(1, 11)]
    shuffled = np.random.default_rng(0).permutation(r)
    acf_shuffled = [np.corrcoef(shuffled[:-k], shuffled[k:])[0, 1] for k in range(1, 11)]
    assert min(acf) > 0.05
    assert np.mean(acf) > np.mean(acf_shuffled) + 0.05


def _hour_profile(df: pl.DataFrame, value: pl.Expr) -> np.ndarray:
    return df.group_by(pl.col("ts").dt.hour().alias("h")).agg(value.alias("v")).sort("h")["v"].to_numpy()


def test_intraday_seasonality(week):
    volume = _hour_profile(week["candles"].filter(pl.col("venue") == "binance"), pl.col("volume").sum())
    spread = _hour_profile(week["books"].filter(pl.col("venue") == "binance"),
                           ((pl.col("ask") - pl.col("bid")) / pl.col("bid")).median())
    latency = _hour_profile(week["latency"].filter(pl.col("ok")), pl.col("latency_ms").median())
    assert volume.max() / volume.min() > 1.8
    assert spread.max() / spread.min() > 1.5
    assert latency.max() / latency.min() > 1.2
    # busy hours are tight and slow, quiet hours wide and fast
    assert abs(int(np.argmax(volume)) - int(np.argmin(spread))) <= 1


def test_outages_and_latency_spikes(sim, week):
    day3 = sim.available_days()[2]
    probes = week["latency"].filter((pl.col("venue") == "okx") & (pl.col("endpoint") == "public_rest")
                                    & (pl.col("ts").dt.date() == day3)).sort("ts")
    # the longest run of consecutive failed probes is an outage, not scattered failures
    runs = probes.with_columns((pl.col("ok") != pl.col("ok").shift()).cum_sum().alias("run")).filter(~pl.col("ok"))
    longest = runs.group_by("run").agg(pl.col("ts").min().alias("a"), pl.col("ts").max().alias("b"),
                                       pl.len().alias("n")).sort("n")[-1]
    assert longest["n"][0] >= 20
    quotes = week["books"].filter((pl.col("venue") == "okx")
                                  & pl.col("ts").is_between(longest["a"][0], longest["b"][0]))
    assert quotes.height == 0
    ok = week["latency"].filter(pl.col("ok"))
    assert ok["latency_ms"].max() > 5 * ok["latency_ms"].median()


def test_funding_regimes_and_intervals(week):
    f = week["funding"]
    series = f.filter((pl.col("venue") == "binance") & (pl.col("symbol") == "BTC/USDT:USDT")).sort("ts")
    signs = np.sign(series["funding_rate"].to_numpy())
    assert np.mean(signs[1:] == signs[:-1]) > 0.7  # regimes persist
    assert len(set(np.sign(f["funding_rate"].to_numpy()))) >= 2  # positive and negative regimes exist
    doge = f.filter((pl.col("venue") == "bybit") & (pl.col("symbol") == "DOGE/USDT:USDT")).sort("ts")
    assert doge["ts"].diff().drop_nulls()[0].total_seconds() == 4 * 3600
    assert series["ts"].diff().drop_nulls()[0].total_seconds() == 8 * 3600


def test_cross_venue_prices_within_arbitrage_bounds(week):
    mids = (week["books"].filter(pl.col("symbol") == "BTC/USDT")
            .with_columns(((pl.col("bid") + pl.col("ask")) / 2).alias("mid"))
            .pivot(on="venue", index="ts", values="mid").drop_nulls())
    a, b = mids["binance"].to_numpy(), mids["bybit"].to_numpy()
    gap_bps = np.abs(a / b - 1) * 1e4
    assert gap_bps.max() < 15  # a few bps of basis, never a free lunch after fees
    assert gap_bps.mean() > 0.1  # but venues are not copies of each other


def test_try_prices_follow_usdtry(week):
    books = week["books"].with_columns(((pl.col("bid") + pl.col("ask")) / 2).alias("mid"))
    try_mid = books.filter(pl.col("symbol") == "BTC/TRY").select("ts", pl.col("mid").alias("try_mid"))
    usdt_mid = books.filter((pl.col("venue") == "binance") & (pl.col("symbol") == "BTC/USDT")).select(
        "ts", pl.col("mid").alias("usdt_mid"))
    fx = week["fx"].select(pl.col("ts"), pl.col("rate"))
    joined = try_mid.join(usdt_mid, on="ts").join_asof(fx.sort("ts"), on="ts")
    implied_premium = joined["try_mid"] / (joined["usdt_mid"] * joined["rate"]) - 1
    assert 0.0 < implied_premium.mean() < 0.01
    assert implied_premium.std() < 0.002


def test_continuity_across_midnight(sim):
    d1, d2 = sim.available_days()[0], sim.available_days()[1]
    last = sim.day(d1)["candles"].filter(pl.col("symbol") == "ETH/USDT", pl.col("venue") == "okx").sort("ts")[-1]
    first = sim.day(d2)["candles"].filter(pl.col("symbol") == "ETH/USDT", pl.col("venue") == "okx").sort("ts")[0]
    assert abs(first["open"][0] / last["close"][0] - 1) < 0.003


def test_stream_to_parquet_writes_days_without_keeping_them(tmp_path):
    written = list(stream_to_parquet(tmp_path, days=2, n_bases=8, venues=("binance", "okx")))
    assert [d.isoformat() for d, _ in written] == ["2026-10-30", "2026-10-31"]
    candles = pl.read_parquet(tmp_path / "candles" / "*.parquet")
    assert candles["symbol"].n_unique() == 16  # 8 bases x (spot, perp)
    assert candles.height == sum(c["candles"] for _, c in written)
    assert "SYM08/USDT" in candles["symbol"].to_list()
