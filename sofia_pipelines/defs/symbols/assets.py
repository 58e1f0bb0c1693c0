"""Symbol rankings and session schedule assets (daily-partitioned, trailing week)."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.analytics_io import read_mart, trailing_window
from sofia_pipelines.defs.symbols.compute import (SYMBOL_RANKINGS, RankingWeights, ScheduleRules,
                                                  session_schedule, symbol_rankings)
from sofia_pipelines.metadata import png_markdown, preview
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_day, read_window, replace_day
from sofia_runtime.schemas import FEE_TABLE, SESSION_SCHEDULE

GROUP = "symbols"
LIQUIDITY = dg.AssetKey(["marts", "mart_hourly_liquidity"])


class RankingConfig(dg.Config):
    weights: dict[str, float] = RankingWeights().model_dump()


class ScheduleConfig(dg.Config):
    rules: dict[str, float] = ScheduleRules().model_dump()


def ranking_png(rankings: pl.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = rankings.head(20).reverse()
    fig, ax = plt.subplots(figsize=(8, 0.3 * top.height + 1))
    labels = [f"{v} {s}" for v, s in zip(top["venue"], top["symbol"])]
    left = [0.0] * top.height
    for component, color in (("liquidity_score", "#4c72b0"), ("spread_score", "#55a868"),
                             ("volatility_score", "#c44e52"), ("cost_score", "#8172b2")):
        weight = RankingWeights().model_dump()[component.removesuffix("_score")]
        values = (top[component] * weight).to_list()
        ax.barh(labels, values, left=left, color=color, label=component.removesuffix("_score"))
        left = [a + b for a, b in zip(left, values)]
    ax.set_xlabel("weighted score")
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(labelsize=7)
    return fig


@dg.asset(key="symbol_rankings", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[LIQUIDITY, dg.AssetKey("fee_table")],
          description="Score per venue and symbol from liquidity (volume, depth), spread, volatility and all-in "
                      "cost, each a visible percentile component.")
def symbol_rankings_asset(context: dg.AssetExecutionContext, config: RankingConfig,
                          warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = trailing_window(context.partition_key)
    with warehouse.get_connection() as conn:
        rankings = symbol_rankings(read_mart(conn, "mart_hourly_liquidity", start, end),
                                   read_window(conn, "analytics", FEE_TABLE), RankingWeights(**config.weights))
        replace_day(conn, "analytics", SYMBOL_RANKINGS, rankings, partition_window(context.partition_key)[0].date())
    return dg.MaterializeResult(metadata={"dagster/row_count": dg.MetadataValue.int(rankings.height),
                                          "top": f"{rankings['venue'][0]} {rankings['symbol'][0]}",
                                          "chart": png_markdown(ranking_png(rankings)), "preview": preview(rankings)})


@dg.asset(key="session_schedule", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[LIQUIDITY, dg.AssetKey(["marts", "mart_hourly_latency"]), dg.AssetKey("symbol_rankings")],
          description="Which symbols trade on which venue in which UTC hours: liquid (minimum volume and depth), "
                      "cheap (spread cap) and fast (latency and error-rate caps); the reason for every off hour.")
def session_schedule_asset(context: dg.AssetExecutionContext, config: ScheduleConfig,
                           warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = trailing_window(context.partition_key)
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        schedule = session_schedule(read_mart(conn, "mart_hourly_liquidity", start, end),
                                    read_mart(conn, "mart_hourly_latency", start, end),
                                    read_day(conn, "analytics", SYMBOL_RANKINGS, day), ScheduleRules(**config.rules))
        replace_day(conn, "analytics", SESSION_SCHEDULE, schedule, day)
    active = schedule.filter(pl.col("active"))
    reasons = schedule.filter(~pl.col("active")).group_by("reason").len().sort("len", descending=True)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(schedule.height), "active_hours": active.height,
        "active_share": round(active.height / max(schedule.height, 1), 3), "off_reasons": preview(reasons),
        "active_by_venue": preview(active.group_by("venue").len().sort("venue"))})


@dg.asset_check(asset="session_schedule", blocking=True, partitions_def=daily_partitions,
                description="The schedule has at least one active venue-symbol-hour.")
def schedule_not_empty(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        schedule = read_day(conn, "analytics", SESSION_SCHEDULE, partition_window(context.partition_key)[0].date())
    active = schedule.filter(pl.col("active")).height
    return dg.AssetCheckResult(passed=active > 0, metadata={"active_hours": active, "rows": schedule.height})
