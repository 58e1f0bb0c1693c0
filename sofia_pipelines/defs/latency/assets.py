"""Latency heatmap and route table assets (daily-partitioned, over a trailing week)."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.analytics_io import read_mart, trailing_window
from sofia_pipelines.defs.latency.compute import LATENCY_HEATMAP, latency_heatmap, route_table, venue_costs
from sofia_pipelines.metadata import png_markdown, preview
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_window, replace_day
from sofia_runtime.schemas import FEE_TABLE, RAW_TABLES, ROUTE_TABLE

GROUP = "latency"


class RouteConfig(dg.Config):
    notional_usd: float = 10_000.0


def heatmap_png(heatmap: pl.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = (heatmap.filter(pl.col("view") == "hour_of_day")
            .with_columns(pl.concat_str("venue", pl.lit(" "), "endpoint").alias("row"))
            .pivot(on="bucket", index="row", values="p95_ms", sort_columns=True).sort("row"))
    fig, ax = plt.subplots(figsize=(10, 0.35 * grid.height + 1.2))
    image = ax.imshow(grid.drop("row").to_numpy(), aspect="auto", cmap="magma_r")
    ax.set_yticks(range(grid.height), grid["row"].to_list(), fontsize=7)
    ax.set_xticks(range(24), [str(h) for h in range(24)], fontsize=7)
    ax.set_xlabel("hour of day (UTC)")
    ax.set_title("p95 latency (ms)")
    fig.colorbar(image, ax=ax)
    return fig


@dg.asset(key="latency_heatmap", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[dg.AssetKey(["raw", "latency"])],
          description="Latency p50/p95/p99 and error rate per venue x endpoint x hour of day and of week, "
                      "over the trailing week of probe samples.")
def latency_heatmap_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = trailing_window(context.partition_key)
    with warehouse.get_connection() as conn:
        probes = read_window(conn, "raw", RAW_TABLES["latency"], start, end)
        heatmap = latency_heatmap(probes)
        replace_day(conn, "analytics", LATENCY_HEATMAP, heatmap, partition_window(context.partition_key)[0].date())
    daily = heatmap.filter(pl.col("view") == "hour_of_day")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(heatmap.height), "probe_samples": probes.height,
        "worst_p99_ms": float(daily["p99_ms"].max() or 0), "worst_error_rate": float(daily["error_rate"].max() or 0),
        "heatmap": png_markdown(heatmap_png(heatmap)), "preview": preview(daily.sort("p95_ms", descending=True))})


@dg.asset(key="route_table", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[dg.AssetKey(["marts", "mart_hourly_liquidity"]), dg.AssetKey(["marts", "mart_hourly_latency"]),
                dg.AssetKey("fee_table")],
          description="Per symbol, side and UTC hour: the venue with the lowest expected all-in cost for the "
                      "configured notional (taker fee + half spread + latency slippage + depth impact), the "
                      "runner-up and the margin.")
def route_table_asset(context: dg.AssetExecutionContext, config: RouteConfig,
                      warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = trailing_window(context.partition_key)
    with warehouse.get_connection() as conn:
        costs = venue_costs(read_mart(conn, "mart_hourly_liquidity", start, end),
                            read_mart(conn, "mart_hourly_latency", start, end),
                            read_window(conn, "analytics", FEE_TABLE), config.notional_usd)
        routes = route_table(costs, config.notional_usd)
        replace_day(conn, "analytics", ROUTE_TABLE, routes, partition_window(context.partition_key)[0].date())
    share = routes.group_by("best_venue").len().sort("len", descending=True)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(routes.height), "symbols": routes["symbol"].n_unique(),
        "share_by_venue": preview(share), "median_cost_bps": float(routes["best_cost_bps"].median()),
        "preview": preview(routes.filter(pl.col("side") == "buy").sort("margin_bps", descending=True,
                                                                       nulls_last=True))})
