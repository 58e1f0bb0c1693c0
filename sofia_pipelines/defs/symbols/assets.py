"""Symbol rankings and session schedule assets (daily-partitioned, trailing week)."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.analytics_io import read_mart, trailing_window
from sofia_pipelines.defs.latency.compute import hourly_tape_latency
from sofia_pipelines.defs.symbols.compute import (SYMBOL_RANKINGS, RankingWeights, ScheduleRules,
                                                  absent_input_only, session_schedule, symbol_rankings)
from sofia_pipelines.market_inputs import (gaps_check, gaps_metadata, read_gaps, tape_latency_samples, with_spread,
                                           write_gaps)
from sofia_pipelines.metadata import png_markdown, preview
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_day, read_window, replace_day
from sofia_runtime.fees import in_force
from sofia_runtime.schemas import FEE_TABLE, RAW_TABLES, SESSION_SCHEDULE

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
        values = (top[component].fill_null(0.0) * weight).to_list()
        ax.barh(labels, values, left=left, color=color, label=component.removesuffix("_score"))
        left = [a + b for a, b in zip(left, values)]
    ax.set_xlabel("weighted score")
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(labelsize=7)
    return fig


@dg.asset(key="symbol_rankings", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[LIQUIDITY, dg.AssetKey("fee_table"), dg.AssetKey(["raw", "candles"])],
          description="Score per venue and symbol from liquidity (volume, depth), spread, volatility and all-in "
                      "cost, each a visible percentile component; spread from books, else the Abdi-Ranaldo "
                      "estimate from candles; a component without its input is left out of the score (`inputs`).")
def symbol_rankings_asset(context: dg.AssetExecutionContext, config: RankingConfig,
                          warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = trailing_window(context.partition_key)
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        liquidity = with_spread(read_mart(conn, "mart_hourly_liquidity", start, end),
                                read_window(conn, "raw", RAW_TABLES["candles"], start, end))
        fees = read_window(conn, "analytics", FEE_TABLE).filter(in_force(day))
        rankings = symbol_rankings(liquidity, fees, RankingWeights(**config.weights))
        replace_day(conn, "analytics", SYMBOL_RANKINGS, rankings, day)
        unranked = liquidity.select("venue", "symbol").unique().join(rankings, on=["venue", "symbol"], how="anti")
        gaps = [(v, s, "no selected taker fee in fee_table") for v, s in unranked.sort("venue", "symbol").iter_rows()]
        if liquidity.is_empty():
            gaps = [("*", "*", "no candles or books in the trailing week")]
        gap_table = write_gaps(conn, "symbol_rankings", day, gaps)
    metadata = {"dagster/row_count": dg.MetadataValue.int(rankings.height), "preview": preview(rankings),
                **gaps_metadata(gap_table)}
    if rankings.height:
        metadata.update({"top": f"{rankings['venue'][0]} {rankings['symbol'][0]}",
                         "chart": png_markdown(ranking_png(rankings))})
    return dg.MaterializeResult(metadata=metadata)


symbol_rankings_inputs_complete = gaps_check("symbol_rankings")


@dg.asset(key="session_schedule", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[LIQUIDITY, dg.AssetKey(["marts", "mart_hourly_latency"]), dg.AssetKey("symbol_rankings"),
                dg.AssetKey(["raw", "candles"]), dg.AssetKey(["raw", "trades"]), dg.AssetKey(["raw", "books"])],
          description="Which symbols trade on which venue in which UTC hours: liquid (minimum volume and depth), "
                      "cheap (spread cap) and fast (latency and error-rate caps); the reason for every off hour. "
                      "Without books the spread is the candle estimate and the depth rule is not applied; without "
                      "probes latency is the tape's feed delay, else its rules are not applied (`inputs`).")
def session_schedule_asset(context: dg.AssetExecutionContext, config: ScheduleConfig,
                           warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = trailing_window(context.partition_key)
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        liquidity = with_spread(read_mart(conn, "mart_hourly_liquidity", start, end),
                                read_window(conn, "raw", RAW_TABLES["candles"], start, end))
        probes = read_mart(conn, "mart_hourly_latency", start, end)
        tape = hourly_tape_latency(tape_latency_samples(conn, start, end))
        schedule = session_schedule(liquidity, pl.concat([probes.select(tape.columns), tape], how="vertical_relaxed"),
                                    read_day(conn, "analytics", SYMBOL_RANKINGS, day), ScheduleRules(**config.rules))
        replace_day(conn, "analytics", SESSION_SCHEDULE, schedule, day)
        absent = schedule.filter(absent_input_only(schedule))
        per_market = absent.group_by("venue", "symbol").agg(pl.len(), pl.col("reason").first()).sort("venue", "symbol")
        gaps = [(v, s, f"off in {n} hour(s) for an absent or estimated input: {r}")
                for v, s, n, r in per_market.iter_rows()]
        if schedule.is_empty():
            gaps = [("*", "*", "no candles or books in the trailing week")]
        gap_table = write_gaps(conn, "session_schedule", day, gaps)
    active = schedule.filter(pl.col("active"))
    reasons = schedule.filter(~pl.col("active")).group_by("reason").len().sort("len", descending=True)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(schedule.height), "active_hours": active.height,
        "active_share": round(active.height / max(schedule.height, 1), 3), "off_reasons": preview(reasons),
        "active_by_venue": preview(active.group_by("venue").len().sort("venue")),
        "inputs": preview(schedule.group_by("method", "inputs").len().sort("len", descending=True)),
        **gaps_metadata(gap_table)})


session_schedule_inputs_complete = gaps_check("session_schedule")


@dg.asset_check(asset="session_schedule", blocking=True, partitions_def=daily_partitions,
                description="The schedule has at least one active venue-symbol-hour, unless every hour is off "
                            "only for an absent input or a rule failed on an estimate standing in for one "
                            "(session_schedule_inputs_complete, WARN, says which).")
def schedule_not_empty(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        schedule = read_day(conn, "analytics", SESSION_SCHEDULE, day)
        gaps = read_gaps(conn, "session_schedule", day)
    active = schedule.filter(pl.col("active")).height
    explained = bool(schedule.height and absent_input_only(schedule).sum() == schedule.height) or \
        bool(schedule.is_empty() and gaps.height)
    return dg.AssetCheckResult(passed=active > 0 or explained,
                               metadata={"active_hours": active, "rows": schedule.height,
                                         "off_for_absent_inputs": int(absent_input_only(schedule).sum())
                                         if schedule.height else 0},
                               description="no active hour: every hour lacks an input" if explained and not active
                               else None)
