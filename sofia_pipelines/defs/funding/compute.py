"""Delta-neutral funding carry per perp and venue, net of both legs' costs, from the funding history."""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel

from sofia_runtime.schemas import FUNDING_OPPORTUNITIES

HOURS_PER_YEAR = 24 * 365


class CarryConfig(BaseModel):
    holding_hours: float = 720.0       # the holding period (30 days) the entry and exit costs are spread over
    basis_risk_multiple: float = 2.0   # charge = this many standard deviations of the perp/spot basis
    min_observations: int = 3


def observed_intervals(funding: pl.DataFrame) -> pl.DataFrame:
    """Median spacing of funding events per venue and symbol, in hours, rounded to the minute so the
    millisecond jitter of real timestamps does not leak in."""
    return (funding.sort("ts").group_by("venue", "symbol").agg(
        ((pl.col("ts").diff().dt.total_seconds() / 60).median().round(0) / 60).alias("observed_interval_hours"),
        pl.col("funding_rate").mean().alias("mean_funding_rate"), pl.len().alias("n")))


def funding_opportunities(funding: pl.DataFrame, books: pl.DataFrame, fees: pl.DataFrame,
                          config: CarryConfig) -> pl.DataFrame:
    stats = observed_intervals(funding).with_columns(
        pl.col("symbol").str.split(":").list.first().alias("spot_symbol"))
    mid = books.with_columns(((pl.col("bid") + pl.col("ask")) / 2).alias("mid"),
                             ((pl.col("ask") - pl.col("bid")) / ((pl.col("bid") + pl.col("ask")) / 2)).alias("spread"))
    spreads = mid.group_by("venue", "symbol").agg(pl.col("spread").mean())
    perp = mid.filter(pl.col("market") == "perp").select("venue", "ts", pl.col("symbol").str.split(":").list.first()
                                                          .alias("spot_symbol"), pl.col("mid").alias("perp_mid"))
    spot = mid.filter(pl.col("market") == "spot").select("venue", "ts", pl.col("symbol").alias("spot_symbol"),
                                                         pl.col("mid").alias("spot_mid"))
    basis = perp.join(spot, on=["venue", "spot_symbol", "ts"]).group_by("venue", "spot_symbol").agg(
        (pl.col("perp_mid") / pl.col("spot_mid") - 1).std().alias("basis_std"))
    taker = fees.filter(pl.col("selected")).select("venue", "symbol", "taker")

    df = (stats
          .join(taker.rename({"taker": "perp_taker"}), on=["venue", "symbol"], how="left")
          .join(taker.rename({"symbol": "spot_symbol", "taker": "spot_taker"}), on=["venue", "spot_symbol"], how="left")
          .join(spreads.rename({"spread": "perp_spread"}), on=["venue", "symbol"], how="left")
          .join(spreads.rename({"symbol": "spot_symbol", "spread": "spot_spread"}), on=["venue", "spot_symbol"],
                how="left")
          .join(basis, on=["venue", "spot_symbol"], how="left"))
    per_hour = pl.col("mean_funding_rate").abs() / pl.col("observed_interval_hours")
    df = df.with_columns(
        pl.when(pl.col("mean_funding_rate") >= 0).then(pl.lit("long_spot_short_perp"))
        .otherwise(pl.lit("short_spot_long_perp")).alias("direction"),
        (pl.col("mean_funding_rate") * HOURS_PER_YEAR / pl.col("observed_interval_hours")).alias("annualized_funding"),
        (2 * (pl.col("spot_taker") + pl.col("perp_taker"))).alias("fees_cost"),      # enter and exit, both legs
        (pl.col("spot_spread") + pl.col("perp_spread")).alias("spread_cost"),       # half a spread x 2 trips x 2 legs
        (config.basis_risk_multiple * pl.col("basis_std")).alias("basis_risk_charge"))
    costs = pl.col("fees_cost") + pl.col("spread_cost") + pl.col("basis_risk_charge")
    df = df.with_columns(
        ((per_hour * config.holding_hours - costs) * HOURS_PER_YEAR / config.holding_hours).alias("net_annual_carry"),
        pl.when(per_hour > 0).then(costs / per_hour).alias("breakeven_hours"))
    missing = pl.col("fees_cost").is_null() | pl.col("spread_cost").is_null() | pl.col("basis_risk_charge").is_null()
    df = df.with_columns(
        pl.when(pl.col("n") < config.min_observations).then(pl.lit("too few funding observations"))
        .when(missing).then(pl.lit("no spot leg, fee or book to price both legs"))
        .when(pl.col("net_annual_carry") <= 0).then(
            pl.format("costs exceed carry: break-even after {} h, holding {} h",
                      pl.col("breakeven_hours").round(1), pl.lit(config.holding_hours)))
        .otherwise(pl.lit("positive net carry")).alias("reason"))
    df = df.with_columns((pl.col("reason") == "positive net carry").alias("offered"),
                         pl.col("net_annual_carry").fill_null(0.0), pl.col("fees_cost").fill_null(0.0),
                         pl.col("spread_cost").fill_null(0.0), pl.col("basis_risk_charge").fill_null(0.0))
    return FUNDING_OPPORTUNITIES.conform(df.sort("net_annual_carry", descending=True), "funding_opportunities")
