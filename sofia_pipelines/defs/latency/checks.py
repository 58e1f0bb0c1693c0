"""Checks on latency and routing: every traded symbol has a route (blocking), rates are probabilities."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.latency.compute import LATENCY_HEATMAP
from sofia_pipelines.market_inputs import LATENCY_FROM_PROBES, read_gaps
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_day, read_window
from sofia_runtime.schemas import LATENCY_ENDPOINTS, MARKETS, ROUTE_TABLE


@dg.asset_check(asset="route_table", blocking=True, partitions_def=daily_partitions, additional_deps=["markets"],
                description="Every traded symbol has a route for both sides in all 24 hours, but for the symbols "
                            "and hours an absent input kept out (listed by route_table_inputs_complete, WARN).")
def every_symbol_routed(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        routes = read_day(conn, "analytics", ROUTE_TABLE, day)
        traded = read_window(conn, "analytics", MARKETS)["symbol"].unique()
        explained = set(read_gaps(conn, "route_table", day)["symbol"])
    counts = routes.group_by("symbol").len()
    short = set(traded) - set(counts.filter(pl.col("len") == 48)["symbol"])
    missing = sorted(short - explained)
    return dg.AssetCheckResult(passed=not missing, metadata={"symbols": len(traded), "unrouted": len(missing),
                                                             "unrouted_for_absent_inputs": len(short & explained)},
                               description=f"no full route for {missing}" if missing else None)


@dg.asset_check(asset="latency_heatmap", partitions_def=daily_partitions,
                description="Error rates are in [0, 1] and every venue with probes has all three endpoints (tape "
                            "delays have the feed's only); an empty heatmap passes only when no latency input "
                            "existed (latency_heatmap_inputs_complete says so).")
def heatmap_complete(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        heatmap = read_day(conn, "analytics", LATENCY_HEATMAP, day)
        absent = not read_gaps(conn, "latency_heatmap", day).is_empty()
    bad_rate = heatmap.filter(~pl.col("error_rate").is_between(0, 1)).height
    per_venue = heatmap.filter(pl.col("method").fill_null(LATENCY_FROM_PROBES) == LATENCY_FROM_PROBES).group_by(
        "venue").agg(pl.col("endpoint").n_unique().alias("n"))
    incomplete = per_venue.filter(pl.col("n") < len(LATENCY_ENDPOINTS))["venue"].to_list()
    return dg.AssetCheckResult(passed=not bad_rate and not incomplete and (heatmap.height > 0 or absent),
                               metadata={"bad_error_rates": bad_rate, "venues_missing_endpoints": str(incomplete)})
