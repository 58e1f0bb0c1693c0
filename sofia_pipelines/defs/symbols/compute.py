"""Symbol scores and the session schedule from hourly liquidity, latency and fees."""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel

from sofia_pipelines.defs.latency.compute import TAPE_ENDPOINT
from sofia_pipelines.market_inputs import LATENCY_FROM_PROBES, LATENCY_FROM_TAPE, SPREAD_FROM_BOOKS, most_common
from sofia_runtime.schemas import SESSION_SCHEDULE, TableSchema

SYMBOL_RANKINGS = TableSchema(
    "symbol_rankings",
    {"venue": pl.Utf8, "symbol": pl.Utf8, "volume_usd_per_hour": pl.Float64, "depth_usd": pl.Float64,
     "spread_bps": pl.Float64, "volatility_1m": pl.Float64, "taker_bps": pl.Float64,
     "liquidity_score": pl.Float64, "spread_score": pl.Float64, "volatility_score": pl.Float64,
     "cost_score": pl.Float64, "score": pl.Float64, "rank": pl.Int64, "method": pl.Utf8, "inputs": pl.Utf8},
    keys=("venue", "symbol"), time_column=None,
    nullable=frozenset({"volume_usd_per_hour", "depth_usd", "spread_bps", "volatility_1m", "liquidity_score",
                        "spread_score", "volatility_score", "cost_score", "method", "inputs"}),
    description="score per venue and symbol; each component is a percentile rank in [0, 1], higher is better; a "
                "component whose input is absent is null and the score is the weighted mean of the others")
COMPONENTS = ("liquidity", "spread", "volatility", "cost")


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
    return ((ranked - 1) / (expr.count() - 1).clip(lower_bound=1)).fill_nan(0.5)


def _with_spread_columns(liquidity: pl.DataFrame) -> pl.DataFrame:
    """`spread_bps`/`spread_method` as market_inputs.with_spread gives them, or the books' spread alone."""
    if "spread_bps" in liquidity.columns:
        return liquidity
    return liquidity.with_columns(pl.col("spread_bps_mean").alias("spread_bps"),
                                  pl.lit(SPREAD_FROM_BOOKS).alias("spread_method"))


def symbol_rankings(liquidity: pl.DataFrame, fees: pl.DataFrame, weights: RankingWeights) -> pl.DataFrame:
    """Components from what the hours have: volume in USD (null where the quote has no USD value), depth (books
    only), spread (books, else the candle estimate), volatility (candles); a component without its input is null,
    and the score is the weighted mean of the components there are (`inputs` names those left out)."""
    taker = fees.filter(pl.col("selected")).select("venue", "symbol", (pl.col("taker") * 1e4).alias("taker_bps"))
    per = _with_spread_columns(liquidity).group_by("venue", "symbol").agg(
        pl.col("volume_usd").mean().alias("volume_usd_per_hour"), pl.col("depth_usd_mean").mean().alias("depth_usd"),
        pl.col("spread_bps").mean().alias("spread_bps"), pl.col("volatility_1m").mean().alias("volatility_1m"),
        most_common("spread_method"))
    out = per.join(taker, on=["venue", "symbol"], how="inner").with_columns(
        pl.mean_horizontal(_pct(pl.col("volume_usd_per_hour")), _pct(pl.col("depth_usd"))).alias("liquidity_score"),
        _pct(pl.col("spread_bps"), descending=True).alias("spread_score"),
        _pct(pl.col("volatility_1m")).alias("volatility_score"),
        _pct(pl.col("taker_bps") + pl.col("spread_bps") / 2, descending=True).alias("cost_score"))
    w = weights.model_dump()
    present = [pl.col(f"{c}_score").is_not_null() for c in COMPONENTS]
    weighted = pl.sum_horizontal(pl.col(f"{c}_score").fill_null(0.0) * w[c] for c in COMPONENTS)
    weight = pl.sum_horizontal(p.cast(pl.Float64) * w[c] for p, c in zip(present, COMPONENTS))
    left_out = pl.concat_str(
        [pl.when(pl.col("volume_usd_per_hour").is_null()).then(pl.lit("volume in USD")),
         pl.when(pl.col("depth_usd").is_null()).then(pl.lit("depth")),
         pl.when(pl.col("spread_bps").is_null()).then(pl.lit("spread, cost")),
         pl.when(pl.col("volatility_1m").is_null()).then(pl.lit("volatility"))], separator=", ", ignore_nulls=True)
    out = out.with_columns((weighted / weight).fill_nan(0.0).fill_null(0.0).alias("score"),
                           pl.format("spread={}", pl.col("spread_method").fill_null("absent")).alias("method"),
                           pl.when(left_out == "").then(pl.lit("volume, depth, spread, volatility, fee"))
                           .otherwise(pl.format("left out (input absent): {}", left_out)).alias("inputs"))
    out = out.with_columns(pl.col("score").rank("ordinal", descending=True).cast(pl.Int64).alias("rank")).sort("rank")
    return SYMBOL_RANKINGS.conform(out, "symbol_rankings")


# Off-hour reasons that name an absent input rather than a rule the hour failed begin with ABSENT_INPUT; a rule
# failed on an estimate standing in for an absent measurement ends with ESTIMATED.
ABSENT_INPUT = "no "
ESTIMATED = " (estimated from candles: no books)"


def session_schedule(liquidity: pl.DataFrame, latency: pl.DataFrame, rankings: pl.DataFrame,
                     rules: ScheduleRules) -> pl.DataFrame:
    """Per venue, symbol and UTC hour: active when the hour is liquid, cheap and fast, with the reason when not.

    Volume in USD and a spread (books, else the candle estimate) are required: without them the hour is off and
    the reason begins "no " (an absent input, not a failed rule); a spread cap failed on the estimate says so.
    Depth (books only) and latency (private REST probes, else the tape's feed delay) are judged where they exist;
    where absent their rule is not applied and `inputs` says so."""
    hourly = _with_spread_columns(liquidity).group_by(
        "venue", "symbol", pl.col("hour").dt.hour().cast(pl.Int64).alias("hour")).agg(
        pl.col("volume_usd").mean().alias("volume_usd"), pl.col("depth_usd_mean").mean().alias("depth_usd"),
        pl.col("spread_bps").mean().alias("spread_bps"), most_common("spread_method"))
    hour = pl.col("hour").dt.hour().cast(pl.Int64).alias("hour")
    agg = [pl.col("p95_ms").mean().alias("p95_ms"), pl.col("error_rate").mean().alias("error_rate")]
    probes = latency.filter(pl.col("endpoint") == "private_rest").group_by("venue", hour).agg(
        *agg, pl.lit(LATENCY_FROM_PROBES).alias("latency_method"))
    tape = latency.filter(pl.col("endpoint") == TAPE_ENDPOINT).group_by("venue", hour).agg(
        *agg, pl.lit(LATENCY_FROM_TAPE).alias("latency_method"))
    lat = pl.concat([probes, tape.join(probes, on=["venue", "hour"], how="anti")])
    df = hourly.join(lat, on=["venue", "hour"], how="left").join(
        rankings.select("venue", "symbol", "score"), on=["venue", "symbol"], how="left")
    failures = [
        (pl.col("volume_usd").is_null(), "no volume in USD (no candles or trades, or a quote without a USD value)"),
        (pl.col("spread_bps").is_null(), "no spread (no books, too few candles to estimate)"),
        (pl.col("volume_usd") < rules.min_volume_usd_per_hour, "volume below minimum"),
        (pl.col("depth_usd") < rules.min_depth_usd, "depth below minimum"),
        (pl.col("spread_bps") > rules.max_spread_bps,
         pl.when(pl.col("spread_method") == SPREAD_FROM_BOOKS).then(pl.lit("spread above cap"))
         .otherwise(pl.lit(f"spread above cap{ESTIMATED}"))),
        (pl.col("p95_ms") > rules.max_latency_p95_ms, "latency p95 above cap"),
        (pl.col("error_rate") > rules.max_error_rate, "venue error rate above cap"),
    ]
    reason = pl.concat_str([pl.when(cond.fill_null(False)).then(text if isinstance(text, pl.Expr) else pl.lit(text))
                            for cond, text in failures],
                           separator="; ", ignore_nulls=True)
    unapplied = pl.concat_str([pl.when(pl.col("depth_usd").is_null()).then(pl.lit("depth (no books)")),
                               pl.when(pl.col("p95_ms").is_null()).then(pl.lit("latency and error rate (no probes "
                                                                              "or tape times)"))],
                              separator=", ", ignore_nulls=True)
    out = df.with_columns(reason.alias("reason")).with_columns(
        (pl.col("reason") == "").alias("active"),
        pl.when(pl.col("reason") == "").then(pl.lit("liquid, cheap and fast")).otherwise("reason").alias("reason"),
        pl.col("score").fill_null(0.0),
        pl.format("spread={};latency={}", pl.col("spread_method").fill_null("absent"),
                  pl.col("latency_method").fill_null("absent")).alias("method"),
        pl.when(unapplied == "").then(pl.lit("every rule applied"))
        .otherwise(pl.format("rules not applied (input absent): {}", unapplied)).alias("inputs"))
    return SESSION_SCHEDULE.conform(out.sort("venue", "symbol", "hour"), "session_schedule")


def absent_input_only(schedule: pl.DataFrame) -> pl.Series:
    """True for off hours whose every reason is an absent input, or a rule failed on an estimate standing in
    for one."""
    return ~schedule["active"] & schedule["reason"].str.split("; ").list.eval(
        pl.element().str.starts_with(ABSENT_INPUT) | pl.element().str.ends_with(ESTIMATED)).list.all()
