"""Latency percentiles by venue, endpoint and hour, and the cheapest venue per symbol, side and hour."""

from __future__ import annotations

import math

import polars as pl

from sofia_pipelines.market_inputs import (ABSENT, LATENCY_FROM_PROBES, LATENCY_FROM_TAPE, SPREAD_FROM_BOOKS,
                                           most_common)
from sofia_runtime.schemas import ROUTE_TABLE, TableSchema

LATENCY_HEATMAP = TableSchema(
    "latency_heatmap",
    {"venue": pl.Utf8, "endpoint": pl.Utf8, "view": pl.Utf8, "bucket": pl.Int64, "samples": pl.Int64,
     "error_rate": pl.Float64, "p50_ms": pl.Float64, "p95_ms": pl.Float64, "p99_ms": pl.Float64,
     "method": pl.Utf8, "inputs": pl.Utf8},
    keys=("venue", "endpoint", "view", "bucket"),
    nullable=frozenset({"p50_ms", "p95_ms", "p99_ms", "method", "inputs"}),
    time_column=None,
    description="latency percentiles and error rate per venue x endpoint x hour of day (view=hour_of_day, "
                "bucket 0-23) and hour of week (view=hour_of_week, bucket 0-167, Monday 00 UTC = 0); method "
                "'probes' (raw.latency) or the tape's local minus exchange time (endpoint websocket)")
# the route table's latency per venue-hour in order of preference: the order path's probes, else the feed's delay
TAPE_ENDPOINT = "tape"

# A venue-hour whose probes fail more often than this is not routed to.
MAX_ROUTE_ERROR_RATE = 0.2
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def latency_heatmap(probes: pl.DataFrame, method: str = LATENCY_FROM_PROBES,
                    inputs: str = "raw.latency") -> pl.DataFrame:
    """Exact percentiles over the successful probes; error rate over all of them."""
    views = {"hour_of_day": pl.col("ts").dt.hour().cast(pl.Int64),
             "hour_of_week": (pl.col("ts").dt.weekday().cast(pl.Int64) - 1) * 24 + pl.col("ts").dt.hour().cast(pl.Int64)}
    ok = pl.col("latency_ms").filter(pl.col("ok"))
    frames = [probes.group_by("venue", "endpoint", expr.alias("bucket")).agg(
        pl.lit(view).alias("view"), pl.len().cast(pl.Int64).alias("samples"),
        (1 - pl.col("ok").mean()).alias("error_rate"),
        ok.quantile(0.50, "linear").alias("p50_ms"), ok.quantile(0.95, "linear").alias("p95_ms"),
        ok.quantile(0.99, "linear").alias("p99_ms")) for view, expr in views.items()]
    out = pl.concat(frames, how="diagonal").sort("venue", "endpoint", "view", "bucket").with_columns(
        pl.lit(method).alias("method"), pl.lit(inputs).alias("inputs"))
    return LATENCY_HEATMAP.conform(out, "latency_heatmap")


def hourly_tape_latency(samples: pl.DataFrame) -> pl.DataFrame:
    """tape_latency_samples as mart_hourly_latency rows (endpoint 'tape'), for venues without probes."""
    return samples.group_by("venue", pl.col("ts").dt.truncate("1h").alias("hour")).agg(
        pl.lit(TAPE_ENDPOINT).alias("endpoint"), pl.len().alias("samples"), pl.lit(0.0).alias("error_rate"),
        pl.col("latency_ms").quantile(0.50, "linear").alias("p50_ms"),
        pl.col("latency_ms").quantile(0.95, "linear").alias("p95_ms"))


def venue_costs(liquidity: pl.DataFrame, latency: pl.DataFrame, fees: pl.DataFrame, notional_usd: float) -> pl.DataFrame:
    """Expected all-in cost in bps of a taker order of `notional_usd` per venue, symbol and UTC hour of day:
    taker fee + half the spread + slippage while the order travels (E|move| over the private REST p50
    latency at the hour's volatility: sigma_per_s * sqrt(t) * sqrt(2/pi)) + impact beyond top-of-book depth
    (half a spread for each multiple of the depth the order eats).

    `liquidity` has `spread_bps`/`spread_method` (market_inputs.with_spread), or the books' spread_bps_mean.
    Latency is the private REST probes' p50, else the tape's feed delay (endpoint 'tape'); a part whose input is
    absent is not charged, and `inputs` says which were left out. Rows without a spread cannot be costed."""
    if "spread_bps" not in liquidity.columns:
        liquidity = liquidity.with_columns(pl.col("spread_bps_mean").alias("spread_bps"),
                                           pl.lit(SPREAD_FROM_BOOKS).alias("spread_method"))
    liq = liquidity.group_by("venue", "symbol", pl.col("hour").dt.hour().cast(pl.Int64).alias("hour")).agg(
        pl.col("spread_bps").mean().alias("spread_bps"), pl.col("volatility_1m").mean().alias("vol_1m"),
        pl.col("depth_usd_mean").mean().alias("depth_usd"), most_common("spread_method"))
    by_hour = [pl.col("p50_ms").mean().alias("latency_ms"), pl.col("error_rate").mean().alias("error_rate")]
    hour = pl.col("hour").dt.hour().cast(pl.Int64).alias("hour")
    probes = latency.filter(pl.col("endpoint") == "private_rest").group_by("venue", hour).agg(
        *by_hour, pl.lit(LATENCY_FROM_PROBES).alias("latency_method"))
    tape = latency.filter(pl.col("endpoint") == TAPE_ENDPOINT).group_by("venue", hour).agg(
        *by_hour, pl.lit(LATENCY_FROM_TAPE).alias("latency_method"))
    lat = pl.concat([probes, tape.join(probes, on=["venue", "hour"], how="anti")])
    taker = fees.filter(pl.col("selected")).select("venue", "symbol", (pl.col("taker") * 1e4).alias("fee_bps"))
    df = (liq.filter(pl.col("spread_bps").is_not_null())
          .join(lat, on=["venue", "hour"], how="left").join(taker, on=["venue", "symbol"], how="inner")
          .with_columns(
              (pl.col("vol_1m") / math.sqrt(60) * (pl.col("latency_ms") / 1000).sqrt() * SQRT_2_OVER_PI * 1e4)
              .alias("slippage_bps"),
              (pl.col("spread_bps") / 2 * (notional_usd / pl.col("depth_usd") - 1).clip(lower_bound=0))
              .alias("impact_bps"),
              pl.col("latency_method").fill_null(ABSENT)))
    left_out = pl.concat_str([pl.when(pl.col("slippage_bps").is_null()).then(pl.lit("latency slippage")),
                              pl.when(pl.col("impact_bps").is_null()).then(pl.lit("depth impact"))],
                             separator=", ", ignore_nulls=True)
    return df.with_columns(
        (pl.col("fee_bps") + pl.col("spread_bps") / 2 + pl.col("slippage_bps").fill_null(0.0)
         + pl.col("impact_bps").fill_null(0.0)).alias("cost_bps"),
        pl.format("spread={};latency={}", "spread_method", "latency_method").alias("method"),
        pl.when(left_out == "").then(pl.lit("fee, spread, latency slippage, depth impact"))
        .otherwise(pl.format("fee, spread; not charged (input absent): {}", left_out)).alias("inputs"))


def route_table(costs: pl.DataFrame, notional_usd: float) -> pl.DataFrame:
    """Per symbol, side and hour: the cheapest venue, the runner-up and the margin between them. The cost
    model is symmetric in side (spread, latency and depth are per venue-hour), so both sides carry it."""
    usable = costs.filter(pl.col("error_rate").fill_null(0.0) <= MAX_ROUTE_ERROR_RATE).sort("cost_bps")
    ranked = usable.group_by("symbol", "hour", maintain_order=True).agg(
        pl.col("venue").first().alias("best_venue"), pl.col("cost_bps").first().alias("best_cost_bps"),
        pl.col("method").first(), pl.col("inputs").first(),
        pl.col("venue").get(1, null_on_oob=True).alias("runner_up_venue"),
        pl.col("cost_bps").get(1, null_on_oob=True).alias("runner_up_cost_bps"))
    out = (ranked.with_columns((pl.col("runner_up_cost_bps") - pl.col("best_cost_bps")).alias("margin_bps"),
                               pl.lit(notional_usd).alias("notional_usd"))
           .join(pl.DataFrame({"side": ["buy", "sell"]}), how="cross").sort("symbol", "side", "hour"))
    return ROUTE_TABLE.conform(out, "route_table")


def route_gaps(liquidity: pl.DataFrame, fees: pl.DataFrame, markets: pl.DataFrame,
               routes: pl.DataFrame) -> list[tuple[str, str, str]]:
    """(venue, symbol, reason) for each market the route table could not cost in some hour, from what was absent."""
    taker = fees.filter(pl.col("selected")).select("venue", "symbol").unique()
    priced = liquidity.filter(pl.col("spread_bps").is_not_null())
    routed_hours = {s: set(h) for s, h in routes.group_by("symbol").agg(pl.col("hour").unique()).iter_rows()}
    gaps = []
    for venue, symbol in markets.select("venue", "symbol").unique().sort("venue", "symbol").iter_rows():
        mine = liquidity.filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol))
        if mine.is_empty():
            gaps.append((venue, symbol, "no candles or books in the trailing week"))
        elif taker.filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol)).is_empty():
            gaps.append((venue, symbol, "no selected taker fee in fee_table"))
        else:
            routed = routed_hours.get(symbol, set())
            seen = set(mine["hour"].dt.hour().to_list())
            hours = set(priced.filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol))["hour"]
                        .dt.hour().to_list())
            no_data = sorted(set(range(24)) - seen - routed)
            no_spread = sorted(seen - hours - routed)
            if no_data:
                gaps.append((venue, symbol, f"no market data in UTC hours {no_data} of the trailing week"))
            elif no_spread:
                gaps.append((venue, symbol, f"no spread (no books, too few candles to estimate) in UTC hours "
                                            f"{no_spread}"))
    return gaps
