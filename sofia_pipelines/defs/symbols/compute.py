"""Symbol scores and the session schedule from hourly liquidity, latency and fees."""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel

from sofia_runtime.schemas import SESSION_SCHEDULE, TableSchema

SYMBOL_RANKINGS = TableSchema(
    "symbol_rankings",
    {"venue": pl.Utf8, "symbol": pl.Utf8, "volume_usd_per_hour": pl.Float64, "depth_usd": pl.Float64,
     "spread_bps": pl.Float64, "volatility_1m": pl.Float64, "taker_bps": pl.Float64,
     "liquidity_score": pl.Float64, "spread_score": pl.Float64, "volatility_score": pl.Float64,
     "cost_score": pl.Float64, "score": pl.Float64, "rank": pl.Int64},
    keys=("venue", "symbol"), time_column=None,
    description="score per venue and symbol; each component is a percentile rank in [0, 1], higher is better")


class RankingWeights(BaseModel):
    liquidity: float = 0.4
    spread: float = 0.25
    volatility: float = 0.1
    cost: float = 0.25


class ScheduleRules(BaseModel):
    min_volume_usd_per_hour: float = 20_000.0
    min_depth_usd: float = 20_000.0
    max_spread_bps: float = 10.0
    max_latency_p95_ms: float = 400.0
    max_error_rate: float = 0.05


def _pct(expr: pl.Expr, descending: bool = False) -> pl.Expr:
    """Percentile rank in [0, 1]; ties share their average rank."""
    ranked = (-expr if descending else expr).rank("average")
    return ((ranked - 1) / (pl.len() - 1).clip(lower_bound=1)).fill_nan(0.5)


def symbol_rankings(liquidity: pl.DataFrame, fees: pl.DataFrame, weights: RankingWeights) -> pl.DataFrame:
    taker = fees.filter(pl.col("selected")).select("venue", "symbol", (pl.col("taker") * 1e4).alias("taker_bps"))
    per = liquidity.group_by("venue", "symbol").agg(
        pl.col("volume_usd").mean().alias("volume_usd_per_hour"), pl.col("depth_usd_mean").mean().alias("depth_usd"),
        pl.col("spread_bps_mean").mean().alias("spread_bps"), pl.col("volatility_1m").mean().alias("volatility_1m"))
    out = per.join(taker, on=["venue", "symbol"], how="inner").with_columns(
        ((_pct(pl.col("volume_usd_per_hour")) + _pct(pl.col("depth_usd"))) / 2).alias("liquidity_score"),
        _pct(pl.col("spread_bps"), descending=True).alias("spread_score"),
        _pct(pl.col("volatility_1m")).alias("volatility_score"),
        _pct(pl.col("taker_bps") + pl.col("spread_bps") / 2, descending=True).alias("cost_score"))
    out = out.with_columns((weights.liquidity * pl.col("liquidity_score") + weights.spread * pl.col("spread_score")
                            + weights.volatility * pl.col("volatility_score") + weights.cost * pl.col("cost_score"))
                           .alias("score"))
    out = out.with_columns(pl.col("score").rank("ordinal", descending=True).cast(pl.Int64).alias("rank")).sort("rank")
    return SYMBOL_RANKINGS.conform(out, "symbol_rankings")


def session_schedule(liquidity: pl.DataFrame, latency: pl.DataFrame, rankings: pl.DataFrame,
                     rules: ScheduleRules) -> pl.DataFrame:
    """Per venue, symbol and UTC hour: active when the hour is liquid, cheap and fast, with the reason when not."""
    hourly = liquidity.group_by("venue", "symbol", pl.col("hour").dt.hour().cast(pl.Int64).alias("hour")).agg(
        pl.col("volume_usd").mean().alias("volume_usd"), pl.col("depth_usd_mean").mean().alias("depth_usd"),
        pl.col("spread_bps_mean").mean().alias("spread_bps"))
    lat = latency.filter(pl.col("endpoint") == "private_rest").group_by(
        "venue", pl.col("hour").dt.hour().cast(pl.Int64).alias("hour")).agg(
        pl.col("p95_ms").mean().alias("p95_ms"), pl.col("error_rate").mean().alias("error_rate"))
    df = hourly.join(lat, on=["venue", "hour"], how="left").join(
        rankings.select("venue", "symbol", "score"), on=["venue", "symbol"], how="left")
    failures = [
        (pl.col("volume_usd").fill_null(0) < rules.min_volume_usd_per_hour, "volume below minimum"),
        (pl.col("depth_usd").fill_null(0) < rules.min_depth_usd, "depth below minimum"),
        (pl.col("spread_bps").fill_null(1e9) > rules.max_spread_bps, "spread above cap"),
        (pl.col("p95_ms").fill_null(1e9) > rules.max_latency_p95_ms, "latency p95 above cap"),
        (pl.col("error_rate").fill_null(1.0) > rules.max_error_rate, "venue error rate above cap"),
    ]
    reason = pl.concat_str([pl.when(cond).then(pl.lit(text)) for cond, text in failures], separator="; ",
                           ignore_nulls=True)
    out = df.with_columns(reason.alias("reason")).with_columns(
        (pl.col("reason") == "").alias("active"),
        pl.when(pl.col("reason") == "").then(pl.lit("liquid, cheap and fast")).otherwise("reason").alias("reason"),
        pl.col("score").fill_null(0.0))
    return SESSION_SCHEDULE.conform(out.sort("venue", "symbol", "hour"), "session_schedule")
