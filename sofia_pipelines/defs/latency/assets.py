"""Latency heatmap and route table assets (daily-partitioned, over a trailing week)."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.analytics_io import read_mart, trailing_window
from sofia_pipelines.defs.latency.compute import (LATENCY_HEATMAP, hourly_tape_latency, latency_heatmap,
                                                  route_gaps, route_table, venue_costs)
from sofia_pipelines.market_inputs import (LATENCY_FROM_TAPE, gaps_check, gaps_metadata, tape_latency_samples,
                                           with_spread, write_gaps)
from sofia_pipelines.metadata import png_markdown, preview
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_window, replace_day
from sofia_runtime.fees import in_force
from sofia_runtime.schemas import FEE_TABLE, MARKETS, RAW_TABLES, ROUTE_TABLE

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


NO_LATENCY = "no latency probes (raw.latency) and no local receive times on the tape (raw.trades/raw.books local_ts)"


@dg.asset(key="latency_heatmap", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[dg.AssetKey(["raw", "latency"]), dg.AssetKey(["raw", "trades"]), dg.AssetKey(["raw", "books"])],
          description="Latency p50/p95/p99 and error rate per venue x endpoint x hour of day and of week, "
                      "over the trailing week of probe samples; where a venue has no probes, the tape's local "
                      "receive time minus exchange time (endpoint websocket, method tape_local_minus_exchange_ts).")
def latency_heatmap_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = trailing_window(context.partition_key)
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        probes = read_window(conn, "raw", RAW_TABLES["latency"], start, end)
        tape = tape_latency_samples(conn, start, end).join(probes.select("venue").unique(), on="venue", how="anti")
        frames = [f for f in (latency_heatmap(probes) if probes.height else None,
                              latency_heatmap(tape, LATENCY_FROM_TAPE, "raw.trades/raw.books local_ts - ts")
                              if tape.height else None) if f is not None]
        heatmap = pl.concat(frames) if frames else LATENCY_HEATMAP.empty()
        replace_day(conn, "analytics", LATENCY_HEATMAP, heatmap, day)
        gaps = write_gaps(conn, "latency_heatmap", day, [] if heatmap.height else [("*", "*", NO_LATENCY)])
    daily = heatmap.filter(pl.col("view") == "hour_of_day")
    metadata = {"dagster/row_count": dg.MetadataValue.int(heatmap.height), "probe_samples": probes.height,
                "tape_samples": tape.height, "preview": preview(daily.sort("p95_ms", descending=True)),
                **gaps_metadata(gaps)}
    if heatmap.height:
        metadata.update({"worst_p99_ms": float(daily["p99_ms"].max() or 0),
                         "worst_error_rate": float(daily["error_rate"].max() or 0),
                         "heatmap": png_markdown(heatmap_png(heatmap))})
    return dg.MaterializeResult(metadata=metadata)


latency_heatmap_inputs_complete = gaps_check("latency_heatmap")


@dg.asset(key="route_table", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[dg.AssetKey(["marts", "mart_hourly_liquidity"]), dg.AssetKey(["marts", "mart_hourly_latency"]),
                dg.AssetKey("fee_table"), dg.AssetKey("markets"), dg.AssetKey(["raw", "candles"]),
                dg.AssetKey(["raw", "trades"]), dg.AssetKey(["raw", "books"])],
          description="Per symbol, side and UTC hour: the venue with the lowest expected all-in cost for the "
                      "configured notional (taker fee + half spread + latency slippage + depth impact), the "
                      "runner-up and the margin. Spread from books, else the Abdi-Ranaldo estimate from candles; "
                      "latency from private REST probes, else the tape's feed delay; a part without its input is "
                      "not charged and the row's `inputs` says so.")
def route_table_asset(context: dg.AssetExecutionContext, config: RouteConfig,
                      warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = trailing_window(context.partition_key)
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        liquidity = with_spread(read_mart(conn, "mart_hourly_liquidity", start, end),
                                read_window(conn, "raw", RAW_TABLES["candles"], start, end))
        probes = read_mart(conn, "mart_hourly_latency", start, end)
        tape = hourly_tape_latency(tape_latency_samples(conn, start, end))
        fees = read_window(conn, "analytics", FEE_TABLE).filter(in_force(day))
        costs = venue_costs(liquidity, pl.concat([probes.select(tape.columns), tape], how="vertical_relaxed"),
                            fees, config.notional_usd)
        routes = route_table(costs, config.notional_usd)
        replace_day(conn, "analytics", ROUTE_TABLE, routes, day)
        gaps = write_gaps(conn, "route_table", day,
                          route_gaps(liquidity, fees, read_window(conn, "analytics", MARKETS), routes))
    share = routes.group_by("best_venue").len().sort("len", descending=True)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(routes.height), "symbols": routes["symbol"].n_unique(),
        "share_by_venue": preview(share),
        "median_cost_bps": float(routes["best_cost_bps"].median()) if routes.height else "n/a: no routes",
        "methods": preview(routes.group_by("method", "inputs").len().sort("len", descending=True)),
        "preview": preview(routes.filter(pl.col("side") == "buy").sort("margin_bps", descending=True,
                                                                       nulls_last=True)),
        **gaps_metadata(gaps)})


route_table_inputs_complete = gaps_check("route_table")
