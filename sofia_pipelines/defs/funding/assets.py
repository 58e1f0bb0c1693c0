"""Funding opportunities asset (daily-partitioned, trailing week of funding and books)."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.analytics_io import trailing_window
from sofia_pipelines.defs.funding.compute import CarryConfig, funding_opportunities
from sofia_pipelines.market_inputs import gaps_check, gaps_metadata, write_gaps
from sofia_pipelines.metadata import preview
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_day, read_window, replace_day
from sofia_runtime.fees import in_force
from sofia_runtime.schemas import FEE_TABLE, FUNDING_OPPORTUNITIES, RAW_TABLES


class FundingConfig(dg.Config):
    holding_hours: float = CarryConfig().holding_hours
    basis_risk_multiple: float = CarryConfig().basis_risk_multiple


@dg.asset(key="funding_opportunities", partitions_def=daily_partitions, group_name="funding",
          kinds={"duckdb", "polars"},
          deps=[dg.AssetKey(["raw", "funding"]), dg.AssetKey(["raw", "books"]), dg.AssetKey(["raw", "candles"]),
                dg.AssetKey("fee_table")],
          description="Delta-neutral spot/perp carry per perp and venue: funding annualized from the observed "
                      "interval, minus both legs' entry and exit fees, spreads and a basis-risk charge; only "
                      "positive net carry is offered, every rejection says why. Spreads and basis from books, "
                      "else from candles (Abdi-Ranaldo spread, basis of closes); `method` names which.")
def funding_opportunities_asset(context: dg.AssetExecutionContext, config: FundingConfig,
                                warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = trailing_window(context.partition_key)
    day_start, day_end = partition_window(context.partition_key)
    with warehouse.get_connection() as conn:
        out = funding_opportunities(read_window(conn, "raw", RAW_TABLES["funding"], start, end),
                                    read_window(conn, "raw", RAW_TABLES["books"], day_start, day_end),
                                    read_window(conn, "analytics", FEE_TABLE).filter(in_force(day_start.date())),
                                    CarryConfig(holding_hours=config.holding_hours,
                                                basis_risk_multiple=config.basis_risk_multiple),
                                    read_window(conn, "raw", RAW_TABLES["candles"], day_start, day_end))
        replace_day(conn, "analytics", FUNDING_OPPORTUNITIES, out, day_start.date())
        unpriced = out.filter(pl.col("reason").str.starts_with("cannot price")
                              | pl.col("reason").str.starts_with("too few"))
        gaps = write_gaps(conn, "funding_opportunities", day_start.date(),
                          [(v, s, r) for v, s, r in unpriced.select("venue", "symbol", "reason").iter_rows()]
                          or ([] if out.height else [("*", "*", "no funding rates in the trailing week")]))
    offered = out.filter(pl.col("offered"))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(out.height), "offered": offered.height,
        "best_net_annual_carry": float(offered["net_annual_carry"].max() or 0.0),
        "intervals_hours": str(sorted(set(out["observed_interval_hours"].to_list()))),
        "preview": preview(out.select("venue", "symbol", "direction", "annualized_funding", "net_annual_carry",
                                      "breakeven_hours", "reason", "method"), 15), **gaps_metadata(gaps)})


funding_opportunities_inputs_complete = gaps_check("funding_opportunities")


@dg.asset_check(asset="funding_opportunities", partitions_def=daily_partitions,
                description="Every offered opportunity has positive net carry and a break-even time.")
def offers_have_positive_carry(context: dg.AssetCheckExecutionContext,
                               warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        out = read_day(conn, "analytics", FUNDING_OPPORTUNITIES, partition_window(context.partition_key)[0].date())
    bad = out.filter(pl.col("offered") & ((pl.col("net_annual_carry") <= 0) | pl.col("breakeven_hours").is_null()))
    return dg.AssetCheckResult(passed=bad.is_empty(), metadata={"offered": out.filter(pl.col("offered")).height,
                                                                "bad_offers": bad.height})
