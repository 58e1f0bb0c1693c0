"""Delta-neutral funding carry per perp and venue, net of both legs' costs, from the funding history."""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel

from sofia_pipelines.market_inputs import ABDI_RANALDO, ABSENT, candle_spread_abdi_ranaldo, finest_candles
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


def _basis_std(prices: pl.DataFrame, source: str) -> pl.DataFrame:
    """Std of perp/spot - 1 over the times both legs have a price (`prices`: venue, symbol, market, ts, mid)."""
    perp = prices.filter(pl.col("market") == "perp").select(
        "venue", "ts", pl.col("symbol").str.split(":").list.first().alias("spot_symbol"),
        pl.col("mid").alias("perp_mid"))
    spot = prices.filter(pl.col("market") == "spot").select("venue", "ts", pl.col("symbol").alias("spot_symbol"),
                                                            pl.col("mid").alias("spot_mid"))
    return perp.join(spot, on=["venue", "spot_symbol", "ts"]).group_by("venue", "spot_symbol").agg(
        (pl.col("perp_mid") / pl.col("spot_mid") - 1).std().alias("basis_std"), pl.lit(source).alias("basis_method"))


def funding_opportunities(funding: pl.DataFrame, books: pl.DataFrame, fees: pl.DataFrame,
                          config: CarryConfig, candles: pl.DataFrame | None = None) -> pl.DataFrame:
    """Spreads and the basis from books; for a leg without books, the spread is the Abdi-Ranaldo estimate from
    its candles and the basis the std of perp/spot closes at the same bar times (`method` names which)."""
    stats = observed_intervals(funding).with_columns(
        pl.col("symbol").str.split(":").list.first().alias("spot_symbol"))
    mid = books.with_columns(((pl.col("bid") + pl.col("ask")) / 2).alias("mid"),
                             ((pl.col("ask") - pl.col("bid")) / ((pl.col("bid") + pl.col("ask")) / 2)).alias("spread"))
    spreads = mid.group_by("venue", "symbol").agg(pl.col("spread").mean(), pl.lit("books").alias("spread_method"))
    basis = _basis_std(mid, "books")
    if candles is not None and candles.height:
        estimated = candle_spread_abdi_ranaldo(candles, every=None).filter(pl.col("spread_bps") > 0).select(
            "venue", "symbol", (pl.col("spread_bps") / 1e4).alias("spread"),
            pl.lit(ABDI_RANALDO).alias("spread_method"))
        spreads = pl.concat([spreads, estimated.join(spreads, on=["venue", "symbol"], how="anti")])
        closes = finest_candles(candles).select("venue", "symbol", "market", "ts", pl.col("close").alias("mid"))
        basis = pl.concat([basis, _basis_std(closes, "candle closes").join(basis, on=["venue", "spot_symbol"],
                                                                           how="anti")])
    taker = fees.filter(pl.col("selected")).select("venue", "symbol", "taker")

    df = (stats
          .join(taker.rename({"taker": "perp_taker"}), on=["venue", "symbol"], how="left")
          .join(taker.rename({"symbol": "spot_symbol", "taker": "spot_taker"}), on=["venue", "spot_symbol"], how="left")
          .join(spreads.rename({"spread": "perp_spread", "spread_method": "perp_spread_method"}),
                on=["venue", "symbol"], how="left")
          .join(spreads.rename({"symbol": "spot_symbol", "spread": "spot_spread",
                                "spread_method": "spot_spread_method"}), on=["venue", "spot_symbol"], how="left")
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
    absent = pl.concat_str([pl.when(pl.col("perp_taker").is_null()).then(pl.lit("perp taker fee")),
                            pl.when(pl.col("spot_taker").is_null()).then(pl.lit("spot taker fee")),
                            pl.when(pl.col("perp_spread").is_null()).then(pl.lit("perp spread (books or candles)")),
                            pl.when(pl.col("spot_spread").is_null()).then(pl.lit("spot spread (books or candles)")),
                            pl.when(pl.col("basis_std").is_null()).then(pl.lit("basis (spot and perp prices at the "
                                                                               "same times)"))],
                           separator=", ", ignore_nulls=True)
    df = df.with_columns(
        pl.format("spread=perp:{},spot:{};basis={}", pl.col("perp_spread_method").fill_null(ABSENT),
                  pl.col("spot_spread_method").fill_null(ABSENT), pl.col("basis_method").fill_null(ABSENT))
        .alias("method"),
        pl.when(absent == "").then(pl.lit("funding, both legs' fees, spreads and basis"))
        .otherwise(pl.format("absent: {}", absent)).alias("inputs"))
    missing = pl.col("fees_cost").is_null() | pl.col("spread_cost").is_null() | pl.col("basis_risk_charge").is_null()
    df = df.with_columns(
        pl.when(pl.col("n") < config.min_observations).then(pl.lit("too few funding observations"))
        .when(missing).then(pl.format("cannot price both legs, absent: {}",
                                      pl.col("inputs").str.strip_prefix("absent: ")))
        .when(pl.col("net_annual_carry") <= 0).then(
            pl.format("costs exceed carry: break-even after {} h, holding {} h",
                      pl.col("breakeven_hours").round(1), pl.lit(config.holding_hours)))
        .otherwise(pl.lit("positive net carry")).alias("reason"))
    df = df.with_columns((pl.col("reason") == "positive net carry").alias("offered"),
                         pl.col("net_annual_carry").fill_null(0.0), pl.col("fees_cost").fill_null(0.0),
                         pl.col("spread_cost").fill_null(0.0), pl.col("basis_risk_charge").fill_null(0.0))
    return FUNDING_OPPORTUNITIES.conform(df.sort("net_annual_carry", descending=True), "funding_opportunities")
