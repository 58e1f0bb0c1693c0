"""Inventory targets and the rebalance plan (daily-partitioned)."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.fees.compute import load_yaml
from sofia_pipelines.defs.inventory.compute import REBALANCE_PLAN, inventory_targets, rebalance_plan
from sofia_pipelines.metadata import preview
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_day, read_window, replace_day, table_exists
from sofia_runtime.schemas import INVENTORY_TARGETS, RAW_TABLES, ROUTE_TABLE, WITHDRAWAL_FEES

GROUP = "inventory"


def current_balances(conn, config: dict) -> tuple[pl.DataFrame, str]:
    """The runtime's latest journaled balances when the audit assets have them, else the configured start."""
    if table_exists(conn, "audit", "balances"):
        latest = conn.sql("SELECT venue, asset, arg_max(total, ts) AS total FROM audit.balances GROUP BY ALL").pl()
        if latest.height:
            return latest, "runtime journal (audit.balances)"
    rows = [{"venue": v, "asset": a, "total": float(x)} for v, assets in config["balances"].items()
            for a, x in assets.items()]
    return pl.DataFrame(rows), "config/inventory.yaml"


def usd_prices(conn, start, end) -> dict[str, float]:
    books = read_window(conn, "raw", RAW_TABLES["books"], start, end)
    fx = read_window(conn, "raw", RAW_TABLES["fx"], start, end)
    last = books.filter(pl.col("symbol").str.ends_with("/USDT")).sort("ts").group_by("symbol").last()
    prices = {s.split("/")[0]: (b + a) / 2 for s, b, a in last.select("symbol", "bid", "ask").iter_rows()}
    prices["USDT"] = 1.0
    if fx.height:
        prices["TRY"] = 1.0 / fx.sort("ts")["rate"][-1]
    return prices


@dg.asset(key="inventory_targets", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[dg.AssetKey("route_table")],
          description="Target balance per venue and asset: each asset's total split by the venues' share of routed "
                      "flow, with a per-venue floor as buffer and a tolerance band.")
def inventory_targets_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    config = load_yaml("inventory.yaml")
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        balances, origin = current_balances(conn, config)
        targets = inventory_targets(read_day(conn, "analytics", ROUTE_TABLE, day), balances,
                                    config["min_share"], config["tolerance"])
        replace_day(conn, "analytics", INVENTORY_TARGETS, targets, day)
    return dg.MaterializeResult(metadata={"dagster/row_count": dg.MetadataValue.int(targets.height),
                                          "balances_from": origin, "preview": preview(targets, 15)})


@dg.asset(key="rebalance_plan", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "scipy"},
          deps=[dg.AssetKey("inventory_targets"), dg.AssetKey("withdrawal_fees")],
          description="The cheapest set of transfers (withdrawal fees by network) that brings every venue within "
                      "its target band, solved as a mixed-integer LP with scipy's linprog; infeasible assets are "
                      "reported with the reason.")
def rebalance_plan_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    config = load_yaml("inventory.yaml")
    start, end = partition_window(context.partition_key)
    with warehouse.get_connection() as conn:
        balances, origin = current_balances(conn, config)
        prices = usd_prices(conn, start, end)
        plan = rebalance_plan(read_day(conn, "analytics", INVENTORY_TARGETS, start.date()), balances,
                              read_window(conn, "analytics", WITHDRAWAL_FEES), prices)
        replace_day(conn, "analytics", REBALANCE_PLAN, plan, start.date())
    planned = plan.filter(pl.col("status") == "planned")
    cost = sum(f * prices.get(a, 0.0) for a, f in planned.select("asset", "fee").iter_rows())
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(plan.height), "transfers": planned.height,
        "total_fee_usd": round(cost, 2), "infeasible_assets": plan.filter(pl.col("status") == "infeasible").height,
        "balances_from": origin, "plan": preview(plan, 20)})


@dg.asset_check(asset="rebalance_plan", blocking=True, partitions_def=daily_partitions,
                additional_deps=["inventory_targets"],
                description="Applying the planned transfers puts every venue of every feasible asset within its band.")
def plan_meets_targets(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        plan = read_day(conn, "analytics", REBALANCE_PLAN, day)
        targets = read_day(conn, "analytics", INVENTORY_TARGETS, day)
        balances, _ = current_balances(conn, load_yaml("inventory.yaml"))
    planned = plan.filter(pl.col("status") == "planned")
    moves = pl.concat([
        planned.select("asset", pl.col("from_venue").alias("venue"), (-pl.col("amount")).alias("delta")),
        planned.select("asset", pl.col("to_venue").alias("venue"), (pl.col("amount") - pl.col("fee")).alias("delta"))])
    infeasible = plan.filter(pl.col("status") == "infeasible")["asset"].to_list()
    final = (targets.join(balances, on=["venue", "asset"], how="left")
             .join(moves.group_by("asset", "venue").agg(pl.col("delta").sum()), on=["asset", "venue"], how="left")
             .with_columns((pl.col("total").fill_null(0) + pl.col("delta").fill_null(0)).alias("final"))
             .filter(~pl.col("asset").is_in(infeasible)))
    tol = 1e-6
    bad = final.filter((pl.col("final") < pl.col("lower") - tol) | (pl.col("final") > pl.col("upper") + tol))
    return dg.AssetCheckResult(passed=bad.is_empty(), metadata={"outside_band": bad.height,
                                                                "infeasible_assets": str(infeasible)})
